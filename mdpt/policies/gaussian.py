"""The simple baselines every diffusion score is read against: a Gaussian policy trained by
behaviour cloning (`bc`) or by IQL's advantage-weighted regression from a frozen guidance (`awr`).

IQL's policy extraction (Kostrikov et al. 2022, ikostrikov/implicit_q_learning):
- network: an MLP (256, 256, ReLU, activation after the last hidden layer) to the mean, squashed by
  tanh; a state-independent log standard deviation clipped to [-5, 2] (policy.py,
  `NormalTanhPolicy(..., log_std_min=-5.0, state_dependent_std=False, tanh_squash_distribution=False)`
  as learner.py builds it);
- loss: -mean(w * log N(a | mu(s), sigma)), w = min(exp(beta * (Q(s, a) - V(s))), 100) with Q the
  minimum of the twin target critics (actor.py); beta = 3.0 on MuJoCo locomotion
  (configs/mujoco_config.py `temperature`); BC is the same loss with w = 1;
- Adam at 3e-4, cosine-decayed (learner.py, over the run);
- evaluation: the mean action (train_offline.py evaluates with temperature 0), clipped to the box.

The class has the interface of `DiffusionPolicy` that training, artifacts and agents use (`init`,
`update`, `sample`, `config`, a `PolicyConfig` of algo bc or awr), so a baseline trains, saves and
evaluates like any policy; it never sees a guidance module, only `adv_fn(obs, act) -> (B,)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from mdpt.errors import MDPTError
from mdpt.nets.modules import dense
from mdpt.nets.optim import make_optimizer

GAUSSIAN_ALGOS = ("bc", "awr")
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # implicit_q_learning policy.py:15 LOG_STD_MAX; learner.py:73 log_std_min


class GaussianNet(nn.Module):
    act_dim: int
    hidden: int
    depth: int
    matmul_precision: str = "default"

    @nn.compact
    def __call__(self, obs):
        h = obs
        for _ in range(self.depth):
            h = nn.relu(dense(self.hidden, self.matmul_precision)(h))
        mean = jnp.tanh(dense(self.act_dim, self.matmul_precision)(h))
        log_std = self.param("log_std", nn.initializers.zeros, (self.act_dim,))
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


def gaussian_log_prob(mean, log_std, act):
    """log N(act | mean, diag(exp(log_std))^2), summed over action dimensions."""
    z = (act - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z * z - log_std - 0.5 * jnp.log(2.0 * jnp.pi), axis=-1)


class GaussianPolicy:
    def __init__(self, config, obs_dim: int, act_dim: int, total_steps: int | None = None):
        """`config`: a resolved `PolicyConfig` of algo bc or awr (hidden, depth, lr, lr_schedule,
        lr_decay_steps, awr_temperature, awr_weight_max, matmul_precision are read)."""
        if config.algo not in GAUSSIAN_ALGOS:
            raise MDPTError(f"unknown baseline {config.algo!r}; use one of: {', '.join(GAUSSIAN_ALGOS)}")
        self.config = c = config
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.net = GaussianNet(act_dim, c.hidden, c.depth, c.matmul_precision)
        self.optimizer = make_optimizer(c.lr, c.lr_schedule, c.lr_decay_steps or total_steps)

    @property
    def algo(self) -> str:
        return self.config.algo

    uses_q = False
    uses_label = False

    @property
    def uses_advantage(self) -> bool:
        return self.algo == "awr" and self.config.awr_temperature > 0

    def init(self, key: jax.Array) -> dict:
        params = self.net.init(key, jnp.zeros((1, self.obs_dim)))
        # "ema" is the copy agents sample from; a baseline samples from its trained weights
        return {"params": params, "ema": params, "opt": self.optimizer.init(params), "step": jnp.int32(0)}

    def weights(self, obs, act, adv_fn=None) -> jax.Array:
        if not self.uses_advantage:
            return jnp.ones(obs.shape[:-1])
        if adv_fn is None:
            raise MDPTError("awr needs a guidance module with a value (IQL): pass --guidance")
        adv = jax.lax.stop_gradient(adv_fn(obs, act))
        return jnp.minimum(jnp.exp(self.config.awr_temperature * adv), self.config.awr_weight_max)

    def update(self, state: dict, batch: dict, key: jax.Array, q_fn=None, label_fn=None, adv_fn=None):
        obs, act = batch["obs"], batch["act"]
        w = self.weights(obs, act, adv_fn)

        def loss_fn(params):
            mean, log_std = self.net.apply(params, obs)
            return -jnp.mean(w * gaussian_log_prob(mean, log_std, act))

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt = self.optimizer.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics = {"policy/loss": loss, "policy/weight_mean": w.mean(), "policy/weight_max": w.max()}
        return {"params": params, "ema": params, "opt": opt, "step": state["step"] + 1}, metrics

    def sample(self, params, obs, key, temperature: float = 1.0, cfg_weight: float = 1.0) -> jax.Array:
        """The mean action (IQL evaluates deterministically), for any leading batch shape."""
        mean, _ = self.net.apply(params, obs)
        return jnp.clip(mean, -1.0, 1.0)
