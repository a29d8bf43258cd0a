# retinanet_mnv2_mbb_w2a2_plbn_kd_pennfudan.py (distilled, per-level head
# norms) with oscillation dampening: a loss pulling the latent weights onto
# their levels, weighted up on a cosine from 0 to 1.0 over the training (at
# 1.0 its gradient is about 0.4x the detection loss's on the trained W2A2
# detector). Test and pack its checkpoints with
# retinanet_mnv2_mbb_w2a2_plbn_pennfudan.py.
_base_ = './retinanet_mnv2_mbb_w2a2_plbn_kd_pennfudan.py'

custom_hooks = [
    dict(type='mmbinary.OscillationDampeningHook', final_weight=1.0)
]
