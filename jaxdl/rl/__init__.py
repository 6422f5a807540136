"""Deep reinforcement learning on gymnax environments, fully compiled.

Pieces so far: :mod:`jaxdl.rl.env` (vmapped environments with episode
statistics), :func:`jaxdl.rl.gae.gae`, :mod:`jaxdl.rl.losses` (PPO's loss)
and :mod:`jaxdl.rl.distributions`; the agents' networks are in
:mod:`jaxdl.models.agent`.
"""

from jaxdl.rl import distributions, losses
from jaxdl.rl.env import ENVIRONMENTS, EpisodeState, VecEnv, make
from jaxdl.rl.gae import gae

__all__ = ["ENVIRONMENTS", "EpisodeState", "VecEnv", "distributions", "gae", "losses", "make"]
