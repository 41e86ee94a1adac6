"""The Python API behind ``tools/demo.py``: your image + your class names → labels.

.. code-block:: python

    from densevlm_mm.apis import (build_vocabulary_embeddings, classify_regions, detect,
                                  inference_dense, inference_segmentor, init_detector,
                                  init_model, init_segmentor)
    model = init_model('configs/region_cls/region-cls_eva02-b16_coco-panoptic-512.py',
                       'work_dirs/run/epoch_6.pth', device='cuda')
    vocab = build_vocabulary_embeddings(model, ['snow', 'skis', 'sky', 'person'])  # or 'coco'
    result = inference_dense(model, 'photo.jpg', vocab)   # result.label_map [H, W]
    regions = classify_regions(model, 'photo.jpg', vocab, boxes=[[10, 20, 200, 240]])
    segmentor = init_segmentor('configs/catseg/<config>.py', 'work_dirs/catseg/iter_80000.pth')
    seg = inference_segmentor(segmentor, 'photo.jpg', ['snow', 'skis', 'sky', 'person'])
    detector = init_detector('configs/fvit/<config>.py', 'work_dirs/fvit/epoch_3.pth',
                             text_checkpoint='checkpoints/EVA02_CLIP_B_psz16_s8B.pt')
    dets = detect(detector, 'photo.jpg', score_thr=0.3, vocabulary=['skis', 'person'])

This layer uses models, datasets and visualization; nothing below it imports it.
"""
from .detection import Detections, detect, init_detector
from .images import IMAGE_EXTENSIONS, ImageReadError, collect_images, load_image
from .inference import (DenseResult, OpenVocabModel, PreparedImage, RegionResult, check_boxes,
                        classify_regions, inference_dense, init_model, prepare_image)
from .model_kinds import checkpoint_kind, config_kind
from .segmentation import SegmentationResult, inference_segmentor, init_segmentor
from .vocabulary_embeddings import (PRESETS, VocabularyEmbeddings, VocabularyError,
                                    build_vocabulary_embeddings, check_class_names,
                                    parse_class_names, preset_names)

__all__ = [
    'init_model', 'build_vocabulary_embeddings', 'inference_dense', 'classify_regions',
    'OpenVocabModel', 'DenseResult', 'RegionResult', 'PreparedImage', 'VocabularyEmbeddings',
    'VocabularyError', 'ImageReadError', 'PRESETS', 'preset_names', 'parse_class_names',
    'check_class_names', 'check_boxes', 'load_image', 'collect_images', 'prepare_image',
    'IMAGE_EXTENSIONS', 'init_detector', 'detect', 'Detections', 'init_segmentor',
    'inference_segmentor', 'SegmentationResult', 'config_kind', 'checkpoint_kind'
]
