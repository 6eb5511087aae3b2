"""Rewards for Mixed On-policy RL: reward functions, the task router, and the Reward-as-a-Service.

result (types) · extract (reading answers) · geometry (GIoU, IoU) · functions (in-process rewards) ·
math_worker / math_pool (Math-Verify in worker processes) · preference (Bradley-Terry model, torch) ·
router (task -> function) · service (HTTP) · client · metrics · config (the `rewards:` schema).
Nothing here imports torch until a preference item is scored.
"""
