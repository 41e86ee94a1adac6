"""The head of DenseVLM: student class embeddings + the alignment loss."""
from typing import Dict, List, Optional, Union

from mmengine.model import BaseModule
from torch import Tensor

from densevlm_mm.registry import MODELS
from densevlm_mm.text_embeddings import load_text_embeddings
from densevlm_mm.vocabulary import Vocabulary

from ..losses.decoupled_align_loss import DecoupledAlignLoss


@MODELS.register_module()
class DenseVLMHead(BaseModule):
    """Holds the student's (frozen) class embeddings and computes the region alignment loss.

    Args:
        loss: loss config: ``dict(type='DecoupledAlignLoss', mode='densevlm')`` (DenseVLM) or
            ``dict(type='LogitsKDLoss')`` (the logits-KD baseline), called with the student and
            teacher region features and class embeddings.
        text_embeddings: file made with the *student* model's text tower, same vocabulary (names
            and order) as the retriever's.
        vocabulary: optional vocabulary to check the file against.
    """

    def __init__(self, loss: dict, text_embeddings: str,
                 vocabulary: Optional[Union[str, Vocabulary]] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.loss_module = MODELS.build(loss)
        te = load_text_embeddings(text_embeddings, vocabulary=vocabulary)
        self.text_embeddings_file = text_embeddings
        self.class_names: List[str] = list(te.class_names)
        self.register_buffer('text', te.embeddings.float(), persistent=False)

    @property
    def embed_dim(self) -> int:
        return self.text.shape[1]

    def loss(self, student_feats: Tensor, targets: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """
        Args:
            student_feats: ``[K, Ds]`` student region features.
            targets: output of :class:`RegionRetriever` (``feats``, ``text``, ``class_is_thing``).
        """
        if isinstance(self.loss_module, DecoupledAlignLoss):
            return self.loss_module(student_feats, targets['feats'], self.text, targets['text'],
                                    targets['class_is_thing'])
        # retrieval-free logit distillation (LogitsKDLoss): no thing/stuff split
        return self.loss_module(student_feats, targets['feats'], self.text, targets['text'])
