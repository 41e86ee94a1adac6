"""Thing/stuff confusion figures (paper Figs. 6–9): which thing classes stuff regions are taken for."""
from typing import Optional, Sequence, Tuple

import numpy as np

from .figure_utils import finish, new_figure


def confusion_matrix(true_labels, pred_labels, num_classes: int) -> np.ndarray:
    """Counts ``[C, C]``: row = true class, column = predicted class."""
    t = np.asarray(true_labels, dtype=np.int64).reshape(-1)
    p = np.asarray(pred_labels, dtype=np.int64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f'{t.size} true labels but {p.size} predictions')
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= num_classes):
        raise ValueError(f'labels must lie in [0, {num_classes})')
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def _row_normalise(counts: np.ndarray) -> np.ndarray:
    totals = counts.sum(1, keepdims=True)
    return counts / np.maximum(totals, 1)


def stuff_as_thing_matrix(true_labels, pred_labels,
                          is_thing) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fraction of each stuff class's regions predicted as each thing class.

    Returns:
        ``(fractions [S, T], stuff class indices [S], thing class indices [T])`` where S / T are all
        stuff / thing classes of the vocabulary; rows of stuff classes without regions are 0.
    """
    is_thing = np.asarray(is_thing, dtype=bool)
    frac = _row_normalise(confusion_matrix(true_labels, pred_labels, is_thing.size))
    stuff, thing = np.flatnonzero(~is_thing), np.flatnonzero(is_thing)
    return frac[np.ix_(stuff, thing)], stuff, thing


def most_confused(matrix: np.ndarray, top_n: Optional[int], exclude: Optional[np.ndarray] = None,
                  valid_rows: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Indices of the ``top_n`` rows with the largest confused mass, then of the ``top_n`` columns
    with the largest mass within those rows; ``exclude`` (bool, same shape) masks cells that are not
    confusions (the diagonal). Both sorted by decreasing mass."""
    mass = matrix if exclude is None else np.where(exclude, 0, matrix)
    rows = np.arange(matrix.shape[0]) if valid_rows is None else np.flatnonzero(valid_rows)
    rows = rows[np.argsort(-mass[rows].sum(1), kind='stable')]
    if top_n is not None:
        rows = rows[:top_n]
    cols = np.argsort(-mass[rows].sum(0), kind='stable')
    if top_n is not None:
        cols = cols[:top_n]
    return rows, cols


def draw_confusion_matrix(true_labels, pred_labels, class_names: Sequence[str], is_thing,
                          mode: str = 'stuff_as_thing', top_n: Optional[int] = 20,
                          out_file: Optional[str] = None, size: Tuple[int, int] = (1000, 900),
                          title: Optional[str] = None, annotate: Optional[bool] = None,
                          cmap: str = 'Blues', dpi: int = 100) -> np.ndarray:
    """Draw a confusion heat map; returns the RGB image ``[H, W, 3]`` (``size = (W, H)``).

    Args:
        true_labels / pred_labels: per-region class indices (e.g. GT and top-1 of mask pooling).
        class_names / is_thing: the vocabulary.
        mode: ``'stuff_as_thing'`` — rows = stuff classes, columns = thing classes, cell = fraction
            of that stuff class's regions predicted as that thing (paper Figs. 6–9);
            ``'full'`` — row-normalised confusion over all classes.
        top_n: ``stuff_as_thing``: the ``top_n`` stuff classes most often taken for things and the
            ``top_n`` thing classes they are taken for; ``full``: a square matrix over the ``top_n``
            classes with the largest off-diagonal mass (row + column). None = everything.
        out_file: PNG path to save.
        annotate: write percentages in cells (default: when both sides ≤ 25).
    """
    names = list(class_names)
    is_thing = np.asarray(is_thing, dtype=bool)
    if len(names) != is_thing.size:
        raise ValueError(f'{len(names)} class names but {is_thing.size} thing/stuff flags')
    true = np.asarray(true_labels, dtype=np.int64).reshape(-1)
    if mode == 'stuff_as_thing':
        frac, row_ids, col_ids = stuff_as_thing_matrix(true, pred_labels, is_thing)
        present = np.bincount(true, minlength=len(names))[row_ids] > 0
        rows, cols = most_confused(frac, top_n, valid_rows=present)
        matrix = frac[np.ix_(rows, cols)]
        row_ids, col_ids = row_ids[rows], col_ids[cols]
        xlabel, ylabel = 'predicted thing class', 'true stuff class'
        default_title = 'Stuff regions classified as things'
    elif mode == 'full':
        frac = _row_normalise(confusion_matrix(true, pred_labels, len(names)))
        present = np.bincount(true, minlength=len(names)) > 0
        off = np.where(np.eye(len(names), dtype=bool), 0, frac)
        score = np.where(present, off.sum(1), 0) + off.sum(0)
        keep = np.argsort(-score, kind='stable')
        keep = keep[score[keep] > 0][:top_n] if top_n is not None else np.arange(len(names))
        matrix = frac[np.ix_(keep, keep)]
        row_ids = col_ids = keep
        xlabel, ylabel = 'predicted class', 'true class'
        default_title = 'Confusion (row-normalised)'
    else:
        raise ValueError(f"mode must be 'stuff_as_thing' or 'full', got {mode!r}")

    fig = new_figure(size, dpi, layout='constrained')
    ax = fig.add_subplot()
    nr, nc = matrix.shape
    if nr == 0 or nc == 0:
        ax.text(0.5, 0.5, 'no regions to show', ha='center', va='center')
        ax.set_axis_off()
    else:
        im = ax.imshow(matrix * 100, cmap=cmap, vmin=0, vmax=max(1e-6, matrix.max() * 100),
                       aspect='auto', interpolation='nearest')
        fig.colorbar(im, ax=ax, label='% of the row\'s regions', shrink=0.8)
        font = max(5, min(10, int(260 / max(nr, nc, 1))))
        ax.set_xticks(range(nc), [names[i] for i in col_ids], rotation=60, ha='right',
                      rotation_mode='anchor', fontsize=font)
        ax.set_yticks(range(nr), [names[i] for i in row_ids], fontsize=font)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if annotate if annotate is not None else max(nr, nc) <= 25:
            top = matrix.max()
            for i in range(nr):
                for j in range(nc):
                    if matrix[i, j] > 0:
                        ax.text(j, i, f'{matrix[i, j] * 100:.0f}', ha='center', va='center',
                                fontsize=max(4, font - 1),
                                color='white' if matrix[i, j] > 0.6 * top else 'black')
    ax.set_title(title or default_title)
    return finish(fig, size, out_file)
