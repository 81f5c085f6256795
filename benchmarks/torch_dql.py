"""Reference: the joint Diffusion-QL update as the published implementation runs it.

Eager PyTorch, one seed, a Python loop (after Wang et al.'s `agents/ql_diffusion.py` and
`agents/diffusion.py`): DQL noise MLP (sinusoidal time embedding 16 -> 32 Mish -> 16, then
[x, t, s] -> 3 x 256 Mish -> act), VP schedule with T = 5, twin Q critics 3 x 256 Mish, Adam 3e-4,
gradient-norm clipping (hopper: 4.0), critic step with next actions from the EMA actor through
5 reverse steps, actor step with BC + Q loss through the 5-step chain with gradient, Polyak target
update (tau 0.005), actor EMA (0.995) every 5 steps after step 1000. `networks="authors"` runs the
same loop with the networks of MDPT's DQL preset (the paper authors' LayerNorm critic, actor AdamW),
so that the two implementations are timed on the same work.

Used by benchmarks/run.py; not part of the test suite.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        half = self.dim // 2
        emb = math.log(10000) / (half - 1)
        emb = torch.exp(torch.arange(half, device=x.device) * -emb)
        emb = x[:, None] * emb[None, :]
        return torch.cat((emb.sin(), emb.cos()), dim=-1)


class MLP(nn.Module):
    def __init__(self, state_dim, action_dim, t_dim=16, hidden=256):
        super().__init__()
        self.time_mlp = nn.Sequential(SinusoidalPosEmb(t_dim), nn.Linear(t_dim, t_dim * 2), nn.Mish(),
                                      nn.Linear(t_dim * 2, t_dim))
        self.mid_layer = nn.Sequential(nn.Linear(state_dim + action_dim + t_dim, hidden), nn.Mish(),
                                       nn.Linear(hidden, hidden), nn.Mish(),
                                       nn.Linear(hidden, hidden), nn.Mish())
        self.final_layer = nn.Linear(hidden, action_dim)

    def forward(self, x, time, state):
        t = self.time_mlp(time)
        return self.final_layer(self.mid_layer(torch.cat([x, t, state], dim=1)))


def vp_beta_schedule(timesteps, b_min=0.1, b_max=10.0):
    t = np.arange(1, timesteps + 1)
    T = timesteps
    alpha = np.exp(-b_min / T - 0.5 * (b_max - b_min) * (2 * t - 1) / T**2)
    return torch.tensor(1 - alpha, dtype=torch.float32)


class Diffusion(nn.Module):
    def __init__(self, state_dim, action_dim, model, max_action=1.0, n_timesteps=5):
        super().__init__()
        self.action_dim, self.max_action, self.model, self.n_timesteps = action_dim, max_action, model, n_timesteps
        betas = vp_beta_schedule(n_timesteps)
        alphas = 1.0 - betas
        ac = torch.cumprod(alphas, 0)
        ac_prev = torch.cat([torch.ones(1), ac[:-1]])
        self.register_buffer("sqrt_alphas_cumprod", torch.sqrt(ac))
        self.register_buffer("sqrt_one_minus_alphas_cumprod", torch.sqrt(1.0 - ac))
        self.register_buffer("sqrt_recip_alphas_cumprod", torch.sqrt(1.0 / ac))
        self.register_buffer("sqrt_recipm1_alphas_cumprod", torch.sqrt(1.0 / ac - 1))
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        self.register_buffer("posterior_log_variance_clipped", torch.log(torch.clamp(post_var, min=1e-20)))
        self.register_buffer("posterior_mean_coef1", betas * torch.sqrt(ac_prev) / (1.0 - ac))
        self.register_buffer("posterior_mean_coef2", (1.0 - ac_prev) * torch.sqrt(alphas) / (1.0 - ac))

    @staticmethod
    def _ex(a, t, x):
        return a.gather(-1, t).reshape(-1, 1)

    def p_sample(self, x, t, s):
        eps = self.model(x, t, s)
        x_recon = self._ex(self.sqrt_recip_alphas_cumprod, t, x) * x - self._ex(self.sqrt_recipm1_alphas_cumprod, t, x) * eps
        x_recon.clamp_(-self.max_action, self.max_action)
        mean = self._ex(self.posterior_mean_coef1, t, x) * x_recon + self._ex(self.posterior_mean_coef2, t, x) * x
        log_var = self._ex(self.posterior_log_variance_clipped, t, x)
        noise = torch.randn_like(x)
        nonzero = (1 - (t == 0).float()).reshape(-1, 1)
        return mean + nonzero * (0.5 * log_var).exp() * noise

    def forward(self, state):
        b = state.shape[0]
        x = torch.randn((b, self.action_dim), device=state.device)
        for i in reversed(range(self.n_timesteps)):
            t = torch.full((b,), i, device=state.device, dtype=torch.long)
            x = self.p_sample(x, t, state)
        return x.clamp_(-self.max_action, self.max_action)

    def loss(self, x0, state):
        b = x0.shape[0]
        t = torch.randint(0, self.n_timesteps, (b,), device=x0.device).long()
        noise = torch.randn_like(x0)
        x_noisy = self._ex(self.sqrt_alphas_cumprod, t, x0) * x0 + self._ex(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        return F.mse_loss(self.model(x_noisy, t, state), noise)


class Critic(nn.Module):
    """Twin Q. `layer_norm`: the authors' critic (CleanDiffuser DQLCritic, MDPT's preset): [Linear,
    LayerNorm, Tanh] then 2 x [Linear, LayerNorm, Mish]; otherwise Diffusion-QL's 3 x [Linear, Mish]."""

    def __init__(self, state_dim, action_dim, hidden=256, layer_norm=False):
        super().__init__()

        def layer(n_in, act):
            return [nn.Linear(n_in, hidden), *([nn.LayerNorm(hidden)] if layer_norm else []), act]

        def q():
            first = nn.Tanh() if layer_norm else nn.Mish()
            return nn.Sequential(*layer(state_dim + action_dim, first), *layer(hidden, nn.Mish()),
                                 *layer(hidden, nn.Mish()), nn.Linear(hidden, 1))

        self.q1_model, self.q2_model = q(), q()

    def forward(self, state, action):
        x = torch.cat([state, action], dim=-1)
        return self.q1_model(x), self.q2_model(x)


class DQL:
    def __init__(self, state_dim, action_dim, lr=3e-4, discount=0.99, tau=0.005, eta=1.0, ema_decay=0.995,
                 update_ema_every=5, step_start_ema=1000, grad_norm=4.0, device="cpu", networks="diffusion-ql"):
        self.actor = Diffusion(state_dim, action_dim, MLP(state_dim, action_dim)).to(device)
        if networks == "authors":  # actor AdamW with weight decay 0.01, as MDPT's preset
            self.actor_optimizer = torch.optim.AdamW(self.actor.parameters(), lr=lr, weight_decay=0.01)
        else:
            self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.ema_model = copy.deepcopy(self.actor)
        self.critic = Critic(state_dim, action_dim, layer_norm=networks == "authors").to(device)
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.discount, self.tau, self.eta, self.ema_decay = discount, tau, eta, ema_decay
        self.update_ema_every, self.step_start_ema, self.grad_norm = update_ema_every, step_start_ema, grad_norm
        self.step = 0

    def step_ema(self):
        if self.step < self.step_start_ema:
            return
        with torch.no_grad():
            for ema_p, p in zip(self.ema_model.parameters(), self.actor.parameters(), strict=True):
                ema_p.mul_(self.ema_decay).add_(p, alpha=1 - self.ema_decay)

    def train_step(self, state, action, next_state, reward, not_done):
        # Q training
        current_q1, current_q2 = self.critic(state, action)
        next_action = self.ema_model(next_state)
        target_q1, target_q2 = self.critic_target(next_state, next_action)
        target_q = torch.min(target_q1, target_q2)
        target_q = (reward + not_done * self.discount * target_q).detach()
        critic_loss = F.mse_loss(current_q1, target_q) + F.mse_loss(current_q2, target_q)
        self.critic_optimizer.zero_grad()
        critic_loss.backward()
        if self.grad_norm > 0:
            nn.utils.clip_grad_norm_(self.critic.parameters(), max_norm=self.grad_norm, norm_type=2)
        self.critic_optimizer.step()

        # policy training
        bc_loss = self.actor.loss(action, state)
        new_action = self.actor(state)
        q1_new, q2_new = self.critic(state, new_action)
        if np.random.uniform() > 0.5:
            q_loss = -q1_new.mean() / q2_new.abs().mean().detach()
        else:
            q_loss = -q2_new.mean() / q1_new.abs().mean().detach()
        actor_loss = bc_loss + self.eta * q_loss
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        if self.grad_norm > 0:
            nn.utils.clip_grad_norm_(self.actor.parameters(), max_norm=self.grad_norm, norm_type=2)
        self.actor_optimizer.step()

        if self.step % self.update_ema_every == 0:
            self.step_ema()
        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.critic_target.parameters(), strict=True):
                tp.mul_(1 - self.tau).add_(p, alpha=self.tau)
        self.step += 1
        return float(actor_loss.item()), float(critic_loss.item())


class Stepper:
    """The joint DQL update on `arrays` (numpy obs/act/rew/mask/next_obs, normalized), `k` steps per
    call with the published replay sampler. `networks`: "diffusion-ql" (the published Diffusion-QL
    step) or "authors" (the same step with the networks and actor optimizer of MDPT's DQL preset:
    LayerNorm critic, AdamW). On a GPU each step ends in `.item()` as the published loop's logging
    does, so timing a call needs no extra sync."""

    def __init__(self, arrays: dict, threads: int | None = None, batch_size: int = 256, seed: int = 0,
                 device: str = "cpu", networks: str = "diffusion-ql"):
        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(seed)
        np.random.seed(seed)
        self.device, self.batch_size, self.networks = device, batch_size, networks
        self.data = {k: torch.as_tensor(np.asarray(arrays[k], np.float32), device=device)
                     for k in ("obs", "act", "rew", "mask", "next_obs")}
        self.n = self.data["rew"].shape[0]
        self.agent = DQL(self.data["obs"].shape[1], self.data["act"].shape[1], device=device, networks=networks)

    def run(self, k: int) -> None:
        d = self.data
        for _ in range(k):
            ind = torch.randint(0, self.n, size=(self.batch_size,), device=self.device)
            self.agent.train_step(d["obs"][ind], d["act"][ind], d["next_obs"][ind], d["rew"][ind, None],
                                  d["mask"][ind, None])

    def describe(self) -> dict:
        return {"threads": torch.get_num_threads(), "networks": self.networks, "torch": torch.__version__,
                "device": self.device if self.device == "cpu" else torch.cuda.get_device_name()}


def benchmark(arrays: dict, steps: int, warmup: int = 5, threads: int | None = None, batch_size: int = 256,
              seed: int = 0, max_seconds: float | None = None, device: str = "cpu", networks: str = "diffusion-ql") -> dict:
    """Gradient steps/s of the joint DQL update (see `Stepper`). Times `steps` steps, or fewer (at
    least 2) once `max_seconds` have passed."""
    stepper = Stepper(arrays, threads, batch_size, seed, device, networks)
    stepper.run(warmup)
    t0 = time.perf_counter()
    done = 0
    while done < steps and (done < 2 or max_seconds is None or time.perf_counter() - t0 < max_seconds):
        stepper.run(1)
        done += 1
    dt = time.perf_counter() - t0
    return {"steps_per_s": done / dt, "steps": done, "seconds": dt, **stepper.describe()}
