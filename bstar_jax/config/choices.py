"""The values that some config fields choose from. The code behind each choice lives above this
layer (bstar_jax/bstar/variants.py, bstar_jax/bstar/balance.py); validation and the offline report
only need the names.
"""

# config.variants: the loop's variants (docs/training.md, "Variants"). New variants go at the end:
# a run's random streams are numbered by its position here.
VARIANTS = ("bstar", "online_rft", "iterative_rft", "rest_em",
            "bstar_temperature_only", "bstar_threshold_only", "online_rft_fixed")
# What each searching variant searches on the dev subset; the other knob stays at the baseline's.
SEARCHED = {"bstar": ("temperature", "threshold"), "bstar_temperature_only": ("temperature",),
            "bstar_threshold_only": ("threshold",)}
FIXED = "online_rft_fixed"  # the variant whose (T, τ) comes from config.fixed

# config.search.mode: "paper" searches (T, τ) on the dev subset (Algorithm 1); "official" searches
# T on the dev subset and τ on the iteration's pool (docs/algorithm.md).
SEARCH_MODES = ("paper", "official")
