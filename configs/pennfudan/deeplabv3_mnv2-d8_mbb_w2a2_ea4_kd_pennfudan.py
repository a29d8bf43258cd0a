# deeplabv3_mnv2-d8_mbb_w2a2_ea4_pennfudan.py (the expand convs' inputs at
# 4 bits, 2 bits elsewhere) distilled from its float segmentor:
# deeplabv3_mnv2-d8_mbb_w2a2_kd_pennfudan.py with the student's expand convs
# reading 4-bit inputs. Test and pack its checkpoints with
# deeplabv3_mnv2-d8_mbb_w2a2_ea4_pennfudan.py.
_base_ = './deeplabv3_mnv2-d8_mbb_w2a2_kd_pennfudan.py'

model = dict(architecture=dict(backbone=dict(expand_a_bits=4)))
