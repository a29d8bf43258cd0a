# retinanet_mnv2_mbb_w2a2_plbn_kd_pennfudan.py (distilled, per-level head
# norms) with oscillation dampening: a loss pulling the latent weights onto
# their levels, weighted up on a cosine from 0 to 0.1 over the training
# (the paper's weight; at 0.1 its gradient is about 0.04x the detection
# loss's on the trained W2A2 detector; -0.3 mAP on two seeds, 1.0 cost
# 4.8 mAP, see docs/accuracy_study.md). Test and pack its checkpoints with
# retinanet_mnv2_mbb_w2a2_plbn_pennfudan.py.
_base_ = './retinanet_mnv2_mbb_w2a2_plbn_kd_pennfudan.py'

custom_hooks = [
    dict(type='mmbinary.OscillationDampeningHook', final_weight=0.1)
]
