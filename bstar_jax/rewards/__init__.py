"""Rewards: the final-answer verifier (verify.py), the process reward model (prm*.py, labelling.py) and
unit-test grading of programs in a sandbox (sandbox*.py, unit_tests.py)."""
from bstar_jax.rewards.verify import extract_answer, has_answer_format, is_correct
from bstar_jax.rewards.prm import (PRM_SCALE, TRUNCATED_SCORE, PRMScores, combined_reward, init_prm,
                                   prm_reward, prm_shardings, score_responses, shard_prm, step_positions,
                                   step_scores, token_logits)
from bstar_jax.rewards.records import PRMRecord, as_record
from bstar_jax.rewards.labelling import LabelResult, label_steps
from bstar_jax.rewards.unit_tests import UnitTestError, UnitTests, parse_tests
from bstar_jax.rewards.sandbox import GradeResult, Sandbox, SandboxConfig, grade_program, grade_programs
