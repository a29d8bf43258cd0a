# deeplabv3_mnv2-d8_mbb_w2a2_kd_pennfudan.py (channel-wise distillation)
# with oscillation dampening: a loss pulling the latent weights onto their
# levels, weighted up on a cosine from 0 to 0.1 over the training (the
# paper's weight). Test and pack its checkpoints with
# deeplabv3_mnv2-d8_mbb_w2a2_pennfudan.py.
_base_ = './deeplabv3_mnv2-d8_mbb_w2a2_kd_pennfudan.py'

custom_hooks = [
    dict(type='mmbinary.OscillationDampeningHook', final_weight=0.1)
]
