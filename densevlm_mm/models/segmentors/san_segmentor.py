"""SAN (Side Adapter Network) as mmseg builds it, with the class checks open vocabularies need."""
from typing import List, Sequence

from mmseg.models.segmentors import MultimodalEncoderDecoder

from densevlm_mm.registry import MODELS


@MODELS.register_module()
class SAN(MultimodalEncoderDecoder):
    """mmseg's ``MultimodalEncoderDecoder`` (image encoder = the first CLIP blocks, decode head =
    ``SideAdapterCLIPHead`` with the remaining blocks, text encoder) plus two checks:

    * at construction, the text encoder's class count must equal ``decode_head.num_classes`` (the
      head's loss weights and sliding-window buffers are sized by it);
    * :attr:`eval_class_names` lets ``EvalClassCheckHook`` refuse a dataset whose classes differ
      from the text rows before any image is processed.

    Arguments are those of ``MultimodalEncoderDecoder``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        names = getattr(self.text_encoder, 'class_names', None)
        if names is not None and len(names) != self.decode_head.num_classes:
            raise ValueError(
                f'SAN: the text encoder lists {len(names)} classes but decode_head.num_classes='
                f'{self.decode_head.num_classes}; set model.decode_head.num_classes (and its '
                'loss class_weight) to the vocabulary size')

    def set_vocabulary(self, names: Sequence[str]) -> None:
        """Segment into classes named at inference time (open vocabulary): the text encoder
        encodes ``names`` with its own weights and templates (an ``embedding_file``, rows of its
        own classes, is no longer used) and the class counts follow. For inference only: the
        training loss keeps its class weights."""
        names = [str(n) for n in names]
        if not names:
            raise ValueError('the vocabulary is empty')
        text = self.text_encoder
        text.vocabulary, text.dataset_name = names, None
        if getattr(text, 'embedding_file', None) is not None:
            text.embedding_file = None
        self.decode_head.num_classes = self.decode_head.out_channels = len(names)
        self.num_classes = self.out_channels = len(names)

    @property
    def eval_class_names(self) -> List[str]:
        """Class names of the text rows, in label order."""
        text = self.text_encoder
        if hasattr(text, 'class_names'):
            return list(text.class_names)
        return list(text.vocabulary) if text.vocabulary is not None else None
