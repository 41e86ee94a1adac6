"""Figures of the paper: thing/stuff confusion (Figs. 6–9), grid-patch view (Fig. 10) and
text-to-dense similarity heat maps (Fig. 4), and open-vocabulary label maps / labelled regions of
the demo. All render off-screen (Agg) to RGB arrays and can save
PNGs of an exact pixel size."""
from .confusion import (confusion_matrix, draw_confusion_matrix, most_confused,
                        stuff_as_thing_matrix)
from .figure_utils import figure_to_array, save_png
from .grid_view import draw_grid_patch_view, grid_boxes
from .heatmap import draw_similarity_heatmaps, similarity_maps
from .label_map import (blend_label_map, class_palette, draw_label_map, draw_region_labels,
                        draw_similarity_overlay, save_label_png)

__all__ = [
    'confusion_matrix', 'stuff_as_thing_matrix', 'most_confused', 'draw_confusion_matrix',
    'grid_boxes', 'draw_grid_patch_view', 'similarity_maps', 'draw_similarity_heatmaps',
    'figure_to_array', 'save_png', 'class_palette', 'blend_label_map', 'draw_label_map',
    'draw_region_labels', 'draw_similarity_overlay', 'save_label_png'
]
