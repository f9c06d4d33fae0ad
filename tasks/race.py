"""Racing a series: which checkpoint is best, for fewer classifier trainings than seeds x checkpoints.

The full protocol trains every checkpoint with every classifier seed and takes the best set of them
(compare.best_set). A race (Maron & Moore's Hoeffding races, Birattari et al.'s F-race, here with
casflow's paired test) trains in rounds: round 1 gives every checkpoint its first seed; after each
round the checkpoints significantly worse than the leader are dropped, and the next round gives one more
seed to the contenders only. A dropped checkpoint never comes back.

- Test: compare.best_set's, on the contenders with the seeds each has so far (paired on the same eval
  images, seed-aware: with several seeds a drop also needs a change beyond the seed noise), the p-values
  Holm-adjusted across the round's contenders.
- Error control across rounds: a race tests again after every round, and each round's tests could drop a
  checkpoint that is as good as the leader. With at most `max` rounds, each round tests at
  ALPHA / max (Bonferroni across rounds, valid whatever the dependence between rounds), and Holm within
  a round keeps that round's chance of any such drop at ALPHA / max; so the chance that a race ever drops
  one stays at ALPHA. As in best_set, the leader is the one that scored highest, and while a checkpoint
  has one seed the test holds its classifier fixed: seed noise counts only from the second seed on.
- Settled: every contender has at least two seeds, and either the last round dropped nobody (the set
  stayed as it was: the seed it added separated no checkpoint from the leader, even if the leader changed
  among them), or every contender differs from the leader by no more than the larger seed spread of the
  two. The drop rule asks for a change beyond that spread, which more seeds do not shrink (they only
  measure it better), so more seeds would drop nobody unless the means moved. Converged checkpoints within
  a point of each other are the common case; without this stop they would take most of the seeds.
- Stop: when one contender is left, when the best set is settled, or when the contenders have `max` seeds.
  The pick is the leader then; the best set is the contenders.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from casflow.tasks.compare import ALPHA, Standing, best_set, seed_spread

ONE_LEFT = "one contender left"
SETTLED = "settled"
MAX_SEEDS = "max seeds"


@dataclasses.dataclass(frozen=True)
class Judgement:
    """The contenders after a round of the race: who is left, who was dropped now, and whether to stop."""

    standings: list[Standing]  # the contenders before this round's drops, against their leader
    contenders: tuple[int, ...]  # the steps still in the race, in step order
    dropped: tuple[int, ...]  # the steps this round dropped
    leader: int
    stop: str | None  # ONE_LEFT | SETTLED | MAX_SEEDS, or None: give the contenders one more seed


@dataclasses.dataclass(frozen=True)
class Race:
    """A finished race: the pick, the best set and what it cost."""

    pick: int  # the leader when the race stopped
    best_set: tuple[int, ...]  # the contenders when it stopped
    seeds: dict[int, int]  # classifier trainings per step
    trainings: int  # in all
    stopped: str  # ONE_LEFT | SETTLED | MAX_SEEDS
    rounds: list[Judgement]


def round_alpha(max_seeds: int) -> float:
    """The level of each round's tests, so that the whole race's chance of a wrong drop stays at ALPHA."""
    return ALPHA / max_seeds


def judge(correct: Mapping[int, np.ndarray], max_seeds: int) -> Judgement:
    """One round's decision on the contenders, step -> seeds x images top-1 correctness (0/1) on the same eval
    images; every contender has had this round's seed. Drops those significantly worse than the leader at
    round_alpha(max_seeds), then says whether the race stops."""
    if not correct:
        raise ValueError("a race needs at least one checkpoint")
    standings = best_set(dict(correct), alpha=round_alpha(max_seeds))
    leader = next(s.step for s in standings if s.is_leader)
    contenders = tuple(s.step for s in standings if s.in_best_set)
    dropped = tuple(s.step for s in standings if not s.in_best_set)
    if len(contenders) == 1:
        stop = ONE_LEFT
    elif min(correct[step].shape[0] for step in contenders) >= max_seeds:
        stop = MAX_SEEDS
    elif min(correct[step].shape[0] for step in contenders) >= 2 and (
            not dropped or all(_within_spread(correct[leader], correct[s.step], s.delta) for s in standings
                   if s.in_best_set and not s.is_leader)):
        stop = SETTLED
    else:
        stop = None
    return Judgement(standings, contenders, dropped, leader, stop)


def _within_spread(leader: np.ndarray, other: np.ndarray, delta: float) -> bool:
    spreads = [seed_spread(leader), seed_spread(other)]
    return None not in spreads and abs(delta) <= max(spreads)


def race(steps: Sequence[int], seeds: Sequence[int], train: Callable[[int, int], np.ndarray]) -> Race:
    """Race the checkpoints `steps` with up to len(seeds) classifier seeds each, in the order of `seeds`.
    train(step, seed) trains one classifier on that checkpoint's samples and returns its top-1 correctness
    (0/1 per eval image, the same images in the same order for every call)."""
    if len(set(steps)) != len(steps) or not steps:
        raise ValueError(f"a race needs distinct steps, got {list(steps)}")
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"a race needs distinct seeds, got {list(seeds)}")
    runs: dict[int, list[np.ndarray]] = {step: [] for step in steps}
    contenders, rounds = tuple(sorted(steps)), []
    for seed in seeds:
        for step in contenders:
            runs[step].append(np.asarray(train(step, seed), dtype=np.float64))
        judgement = judge({step: np.stack(runs[step]) for step in contenders}, len(seeds))
        rounds.append(judgement)
        contenders = judgement.contenders
        if judgement.stop:
            break
    trained = {step: len(runs[step]) for step in sorted(steps)}
    return Race(judgement.leader, contenders, trained, sum(trained.values()), judgement.stop, rounds)


def replay(correct: Mapping[int, np.ndarray], max_seeds: int) -> Race:
    """The race that gave the checkpoints these seeds x images correctness arrays (their seeds in the order
    the race gave them), decided again from them: the race is a function of its data, so this is its result.
    ValueError when a checkpoint has other seeds than that race would have given it."""
    def stored(step: int, index: int) -> np.ndarray:
        if index >= correct[step].shape[0]:
            raise ValueError(f"step {step} has {correct[step].shape[0]} classifier seeds where its race gives "
                             f"more: not the result of one race with max_seeds {max_seeds}")
        return correct[step][index]

    result = race(sorted(correct), list(range(max_seeds)), stored)
    for step, rows in correct.items():
        if rows.shape[0] != result.seeds[step]:
            raise ValueError(f"step {step} has {rows.shape[0]} classifier seeds where its race gives "
                             f"{result.seeds[step]}: not the result of one race with max_seeds {max_seeds}")
    return result
