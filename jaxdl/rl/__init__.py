"""Deep reinforcement learning on gymnax environments, fully compiled.

:mod:`jaxdl.rl.env` (vmapped environments with episode statistics,
observation statistics, whole-episode evaluation), :func:`jaxdl.rl.gae.gae`,
:mod:`jaxdl.rl.losses` (PPO's loss) and :mod:`jaxdl.rl.distributions`; the
agents :class:`jaxdl.rl.ppo.PPO` and :class:`jaxdl.rl.dqn.DQN` (each a whole
training run as one ``lax.scan`` over updates); their networks are in
:mod:`jaxdl.models.agent`. Runs with configs, checkpoints and several agents
side by side: :mod:`jaxdl.rl_run` (``jaxdl train`` with ``algorithm: ppo``
or ``dqn``).

gymnax is imported when an environment is first made (importing it starts
JAX's backends), not when this package is imported.
"""

from jaxdl.rl import distributions, losses
from jaxdl.rl.env import ENVIRONMENTS, EpisodeState, VecEnv, make
from jaxdl.rl.gae import gae

__all__ = ["ENVIRONMENTS", "EpisodeState", "VecEnv", "distributions", "gae", "losses", "make"]
