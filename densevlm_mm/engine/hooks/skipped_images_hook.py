"""Report images the training pipeline skipped, and pass the epoch to streaming datasets."""
from typing import Optional

from mmengine.hooks import Hook

from densevlm_mm.datasets.transforms.loading import get_skipped_images
from densevlm_mm.registry import HOOKS
from densevlm_mm.utils.checks import check_number

INFO_KEY = 'skipped_images'


@HOOKS.register_module()
class SkippedImagesHook(Hook):
    """Log how many training images ``LoadImageSafe`` skipped (unreadable or too small).

    The count comes from shared memory that dataloader workers write into, so it covers all
    workers of this rank. It is logged every ``interval`` iterations when it has grown and at the
    end of every epoch, with the newest skipped paths, and kept in the message hub's runtime info
    ``skipped_images`` (saved in checkpoints: a resumed run continues the count).

    An epoch that ran no iteration raises an error naming the newest skipped images (a training
    set whose images are all unreadable would otherwise train on nothing without a word).

    With ``set_dataset_epoch`` it also calls ``set_epoch(epoch)`` on a training dataset that has
    one when the sampler cannot carry it (``SA1BShardDataset`` is an IterableDataset: its
    DataLoader takes no sampler, so ``DistSamplerSeedHook`` cannot reach it).

    Args:
        interval: iterations between reports (only when new images were skipped).
        max_paths: newest skipped paths shown per report.
        set_dataset_epoch: forward the epoch to the training dataset.
    """

    priority = 'BELOW_NORMAL'

    def __init__(self, interval: int = 50, max_paths: int = 5,
                 set_dataset_epoch: bool = True) -> None:
        self.interval = check_number(interval, 'interval', 'SkippedImagesHook', low=1, integer=True,
                                     example=50)
        self.max_paths = check_number(max_paths, 'max_paths', 'SkippedImagesHook', low=0,
                                      integer=True, example=5)
        self.set_dataset_epoch = set_dataset_epoch
        self._offset = 0  # skips counted before a resume
        self._start = 0  # this process's count when training began
        self._reported = 0
        self._epoch_iters = 0

    def before_train(self, runner) -> None:
        self._offset = int(runner.message_hub.get_info(INFO_KEY, 0) or 0)
        self._start = get_skipped_images().count
        self._reported = self._offset

    def before_train_epoch(self, runner) -> None:
        self._epoch_iters = 0
        if not self.set_dataset_epoch:
            return
        loader = runner.train_loop.dataloader
        dataset = getattr(loader, 'dataset', None)
        sampler = getattr(loader, 'sampler', None)
        if hasattr(dataset, 'set_epoch') and not hasattr(sampler, 'set_epoch'):
            dataset.set_epoch(runner.epoch)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._epoch_iters += 1
        if self.every_n_train_iters(runner, self.interval):
            self._report(runner, only_if_new=True)

    def after_train_epoch(self, runner) -> None:
        self._report(runner, only_if_new=False)
        if self._epoch_iters == 0:
            skipped = get_skipped_images()
            raise RuntimeError(
                f'epoch {runner.epoch + 1} ran no training iteration: the training data loader '
                f'yielded nothing ({skipped.count} images skipped so far; newest: '
                f'{"; ".join(skipped.paths[-3:]) or "none"})')

    def _report(self, runner, only_if_new: bool) -> Optional[int]:
        skipped = get_skipped_images()
        total = self._offset + max(0, skipped.count - self._start)
        runner.message_hub.update_info(INFO_KEY, total)
        new = total - self._reported
        if only_if_new and new <= 0:
            return None
        self._reported = total
        msg = f'skipped training images so far: {total}'
        if new > 0 and self.max_paths > 0:
            shown = skipped.paths[-min(new, self.max_paths):]
            msg += f' (+{new}; newest: {"; ".join(shown)})'
        elif new > 0:
            msg += f' (+{new})'
        runner.logger.info(msg)
        return total
