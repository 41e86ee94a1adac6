"""The head of DenseVLM: student class embeddings + the alignment loss."""
from typing import Dict, List, Optional, Union

from mmengine.model import BaseModule
from torch import Tensor

from densevlm_mm.registry import MODELS
from densevlm_mm.text_embeddings import load_text_embeddings
from densevlm_mm.vocabulary import Vocabulary


@MODELS.register_module()
class DenseVLMHead(BaseModule):
    """Holds the student's (frozen) class embeddings and computes the region alignment loss.

    Args:
        loss: loss config: ``dict(type='DecoupledAlignLoss', mode='densevlm')`` (DenseVLM) or
            ``dict(type='LogitsKDLoss')`` (the logits-KD baseline). It is given the P-VLM's
            retrieval (which carries τ and the text normalisation) through ``from_retrieval``.
        text_embeddings: file made with the *student* model's text tower, same vocabulary (names
            and order) as the retriever's.
        vocabulary: optional vocabulary to check the file against.
    """

    def __init__(self, loss: dict, text_embeddings: str,
                 vocabulary: Optional[Union[str, Vocabulary]] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.loss_module = MODELS.build(loss)
        if not callable(getattr(self.loss_module, 'from_retrieval', None)):
            raise ValueError(f'DenseVLMHead: loss {type(self.loss_module).__name__} does not take '
                             'the P-VLM retrieval (no `from_retrieval`); use DecoupledAlignLoss '
                             'or LogitsKDLoss')
        te = load_text_embeddings(text_embeddings, vocabulary=vocabulary)
        self.text_embeddings_file = text_embeddings
        self.text_model_name: str = te.model_name  # checked against the student by DenseVLM
        self.class_names: List[str] = list(te.class_names)
        self.register_buffer('text', te.embeddings.float(), persistent=False)

    @property
    def embed_dim(self) -> int:
        return self.text.shape[1]

    def loss(self, student_feats: Tensor, targets: Dict) -> Dict[str, Tensor]:
        """
        Args:
            student_feats: ``[K, Ds]`` student region features.
            targets: the retrieval of :class:`RegionRetriever` for the same regions.
        """
        return self.loss_module.from_retrieval(student_feats, self.text, targets)
