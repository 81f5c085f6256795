#!/usr/bin/env bash
# The four preset departures from the authors' code, and a longer stage 1, each measured against the
# preset on bullet hopper-medium-replay at the budget and seeds of results/hopper-mr-9seeds (DQL, 9 seeds x
# 15,000 steps, evaluated every 5,000 steps with 50 candidates and 10 episodes per seed). One run per
# departure; the preset's side is that reproduction's dql-joint (joint departures) or dql-gfdt (stage-1
# departures). Resumable: run it again after an interruption. OUT: where the runs go (default departures/).
set -euo pipefail
OUT=${OUT:-departures}
SEED=${SEED:-0}    # a shard of the seeds: SEED=0 SEEDS=3, SEED=3 SEEDS=3, SEED=6 SEEDS=3 (one sitting each)
SEEDS=${SEEDS:-9}
SHARD="seeds-$SEED-$((SEED + SEEDS - 1))"
COMMON=(--algo dql --dataset bullet-hopper-medium-replay-v0 --seed "$SEED" --seeds "$SEEDS" --steps 15000 --no-progress
        --set eval.every=5000 --set eval.episodes=10 --set eval.final_episodes=10 --set eval.curve_candidates=50)
run() { local name=$1; shift; mdpt train-policy "${COMMON[@]}" "$@" --out "$OUT/$name/$SHARD" --resume; }
# diffusion noise schedule: the authors' (CleanDiffuser's cosine default) against VP (Diffusion-QL's)
run dql-joint-cosine --mode joint --set policy.noise_schedule=cosine
# the noise network's time embedding: the authors' 64 against Diffusion-QL's 16
run dql-joint-time64 --mode joint --set policy.time_dim=64
# the IQL critic of stage 1: the authors' Mish against IDQL's ReLU
run dql-gfdt-iql-mish --mode guidance-first --set guidance.activation=mish
# the IQL critic's learning rate: the authors' cosine over 200k critic steps against IDQL's constant
run dql-gfdt-iql-cosine --mode guidance-first --set guidance.lr_schedule=cosine --set guidance.lr_decay_steps=200000
# stage 1 longer than the policy (the authors train it 1M steps): 3x here
run dql-gfdt-stage1-45k --mode guidance-first --set stage1.guidance_steps=45000
