# Logits-KD baseline (paper Tables 1/11): the student matches the P-VLM's 316-way class
# distribution of every region (no confidence threshold, no thing/stuff decoupling), with the
# retriever's tau (0.01) and text normalisation.
_base_ = ['../densevlm/densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e.py']
model = dict(head=dict(loss=dict(_delete_=True, type='LogitsKDLoss')))
