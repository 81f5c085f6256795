"""Flax networks: diffusion noise networks (DQL MLP, IDQL LN-ResNet) and value networks."""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mdpt.nets.precision import dense_kwargs

_MISH_LINEAR_FROM = 20.0  # above this, mish(x) = x to float32 precision
# The same clamp one float32 step higher: the derivative's exp must not be the forward's exp (below).
_SLOPE_CLAMP = np.nextafter(np.float32(_MISH_LINEAR_FROM), np.float32(np.inf))


@jax.custom_jvp
def mish(x):
    """x * tanh(softplus(x)), with one exp: tanh(log(1 + e^x)) = n / (n + 2), n = e^x (e^x + 2).

    Faster than the textbook form on CPU (equal to it and its gradient to 1e-5, tested). The
    backward pass keeps two arrays per layer, the activation's input and output, and recomputes
    e^x from the input: its derivative's exp is clamped one float32 step away from the forward's,
    so XLA cannot merge the two and keep e^x alive from the forward pass to the backward pass (a
    third array per layer: 22% more peak memory in a joint DQL step; measured in benchmarks/RESULTS.md)."""
    e = jnp.exp(jnp.minimum(x, _MISH_LINEAR_FROM))
    n = e * (e + 2.0)
    return jnp.where(x > _MISH_LINEAR_FROM, x, x * n / (n + 2.0))


@mish.defjvp
def _mish_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    e = jnp.exp(jnp.minimum(x, _SLOPE_CLAMP))  # equal to the forward's e wherever the slope uses it
    n = e * (e + 2.0)
    d = n + 2.0
    slope = jnp.where(x > _MISH_LINEAR_FROM, 1.0, n / d + x * 4.0 * e * (e + 1.0) / (d * d))
    return mish(x), slope * t


ACTIVATIONS: dict[str, Callable] = {"mish": mish, "relu": nn.relu, "swish": nn.swish, "gelu": nn.gelu, "tanh": jnp.tanh}


def activation(name: str) -> Callable:
    return ACTIVATIONS[name]


def dense(features: int, matmul_precision: str) -> nn.Dense:
    return nn.Dense(features, **dense_kwargs(matmul_precision))


class SinusoidalPosEmb(nn.Module):
    dim: int

    @nn.compact
    def __call__(self, t):
        half = self.dim // 2
        freqs = jnp.exp(jnp.arange(half) * -(math.log(10000.0) / (half - 1)))
        args = t.astype(jnp.float32)[..., None] * freqs
        return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class ConditionEmbedding(nn.Module):
    """Class condition for classifier-free guidance; index `num_classes` is the null (dropped) token."""

    num_classes: int
    dim: int = 16

    @nn.compact
    def __call__(self, cond):
        return nn.Embed(self.num_classes + 1, self.dim)(cond)


class DQLNoiseNet(nn.Module):
    """Diffusion-QL's noise MLP: sin-emb(16) -> 32 Mish -> 16; [a_t, t_emb, s] -> depth x (hidden Mish)."""

    act_dim: int
    hidden: int = 256
    depth: int = 3
    time_dim: int = 16
    num_classes: int = 0  # > 0 adds a classifier-free condition input
    matmul_precision: str = "default"

    @nn.compact
    def __call__(self, x, t, obs, cond=None, deterministic: bool = True):
        p = self.matmul_precision
        temb = SinusoidalPosEmb(self.time_dim)(t)
        temb = dense(self.time_dim, p)(mish(dense(self.time_dim * 2, p)(temb)))
        parts = [x, temb, obs]
        if self.num_classes:
            parts.append(ConditionEmbedding(self.num_classes)(cond))
        h = jnp.concatenate(parts, axis=-1)
        for _ in range(self.depth):
            h = mish(dense(self.hidden, p)(h))
        return dense(self.act_dim, p)(h)


class ResidualBlock(nn.Module):
    width: int
    dropout: float
    act: Callable
    matmul_precision: str = "default"

    @nn.compact
    def __call__(self, h, deterministic: bool):
        y = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        y = nn.LayerNorm()(y)
        y = dense(self.width * 4, self.matmul_precision)(y)
        y = self.act(y)
        y = dense(self.width, self.matmul_precision)(y)
        return h + y


class LNResNetNoiseNet(nn.Module):
    """IDQL's noise network: learnable Fourier time features -> MLP; [s, a_t, t] -> Dense(width) ->
    blocks x [Dropout, LayerNorm, Dense(4 width), act, Dense(width)] + skip -> act -> Dense(act_dim)."""

    act_dim: int
    hidden: int = 256
    depth: int = 3
    dropout: float = 0.1
    time_dim: int = 64
    num_classes: int = 0
    act_name: str = "mish"
    matmul_precision: str = "default"

    @nn.compact
    def __call__(self, x, t, obs, cond=None, deterministic: bool = True):
        act, p = activation(self.act_name), self.matmul_precision
        w = self.param("fourier", nn.initializers.normal(0.2), (self.time_dim // 2, 1))
        f = 2 * jnp.pi * t.astype(jnp.float32)[..., None] @ w.T
        temb = jnp.concatenate([jnp.cos(f), jnp.sin(f)], axis=-1)
        temb = dense(self.time_dim, p)(act(dense(self.time_dim * 2, p)(temb)))
        parts = [obs, x, temb]
        if self.num_classes:
            parts.append(ConditionEmbedding(self.num_classes)(cond))
        h = dense(self.hidden, p)(jnp.concatenate(parts, axis=-1))
        for _ in range(self.depth):
            h = ResidualBlock(self.hidden, self.dropout, act, p)(h, deterministic)
        return dense(self.act_dim, p)(act(h))


class MLP(nn.Module):
    """depth x [Dense, LayerNorm (optional), activation] -> Dense(out_dim); the first hidden layer
    may use its own activation (the authors' DQL critic: Tanh first, Mish after)."""

    hidden: int
    depth: int
    out_dim: int
    act_name: str = "relu"
    layer_norm: bool = False
    first_act_name: str | None = None
    matmul_precision: str = "default"

    @nn.compact
    def __call__(self, h):
        for i in range(self.depth):
            h = dense(self.hidden, self.matmul_precision)(h)
            if self.layer_norm:
                h = nn.LayerNorm()(h)
            h = activation(self.first_act_name if i == 0 and self.first_act_name else self.act_name)(h)
        return dense(self.out_dim, self.matmul_precision)(h)


class TwinQ(nn.Module):
    """Two independent Q(s, a) heads, returned stacked on a leading axis of size 2."""

    hidden: int = 256
    depth: int = 2
    act_name: str = "relu"
    layer_norm: bool = False
    first_act_name: str | None = None
    matmul_precision: str = "default"

    @nn.compact
    def __call__(self, obs, act):
        h = jnp.concatenate([obs, act], axis=-1)
        ensemble = nn.vmap(MLP, variable_axes={"params": 0}, split_rngs={"params": True},
                           in_axes=None, out_axes=0, axis_size=2)
        return ensemble(self.hidden, self.depth, 1, self.act_name, self.layer_norm, self.first_act_name,
                        self.matmul_precision)(h)[..., 0]


class ValueNet(nn.Module):
    hidden: int = 256
    depth: int = 2
    act_name: str = "relu"
    layer_norm: bool = False
    first_act_name: str | None = None
    matmul_precision: str = "default"

    @nn.compact
    def __call__(self, obs):
        return MLP(self.hidden, self.depth, 1, self.act_name, self.layer_norm, self.first_act_name,
                   self.matmul_precision)(obs)[..., 0]
