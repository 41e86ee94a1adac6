"""Class text embeddings for a vocabulary, from an open_clip model and a local checkpoint.

    python tools/text_embeddings.py MODEL_NAME CHECKPOINT VOCAB OUT.pt [--templates FILE]
        [--no-normalize] [--device cuda] [--batch-size 256]

MODEL_NAME: open_clip name (``EVA02-B-16``, ``ViT-B-16``, ... or a bundled tiny config);
CHECKPOINT: local weights (``none`` = random init, for the tiny demo models);
VOCAB: a bundled vocabulary name (``densevlm_316``, ``coco_panoptic_133``, ...), a JSON list of
``{"name", "isthing"}`` or a txt with ``thing<TAB>name`` lines; the 63 templates of the reference
by default (``--templates`` takes a txt with one template per line, ``{}`` = name).
The output stores the embeddings with model name, dimension, class names and ``is_thing``, and a
``background`` row (the word "background", same templates and normalisation: the fixed background
column of CLIPSelf's F-ViT, ``background='embedding'`` of the F-ViT configs).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Generate class text embeddings')
    parser.add_argument('model_name', help='open_clip model name')
    parser.add_argument('checkpoint', help='local checkpoint path, or "none" for random init')
    parser.add_argument('vocabulary', help='vocabulary name or file')
    parser.add_argument('out', help='output .pt file')
    parser.add_argument('--templates', help='txt file of templates (default: the 63 of spec §7)')
    parser.add_argument('--no-normalize', action='store_true',
                        help='keep the un-normalised prompt mean (the reference 316-class files)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch-size', type=int, default=256)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from densevlm_mm.text_embeddings import generate_text_embedding_file
    te = generate_text_embedding_file(args.model_name, args.checkpoint, args.vocabulary, args.out,
                                      args.templates, not args.no_normalize, args.device,
                                      args.batch_size)
    print(f'\nwrote {args.out}: {len(te)} classes ({int(te.is_thing.sum())} things) + the '
          f'background row, {te.embed_dim}-d, model {te.model_name}')


if __name__ == '__main__':
    main()
