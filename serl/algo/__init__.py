"""Pure math of serl: tensors (or strings / id lists) in, tensors out. Imports only torch, numpy, stdlib.
The package itself imports nothing, so reading responses (:mod:`serl.algo.masks`) never loads torch.

* :mod:`serl.algo.advantages` — per-step scores and GRPO advantages (docs/reference.md §1.4–1.5).
* :mod:`serl.algo.reweight` — SERL action-token reweighting of the advantage (§5.2–5.3).
* :mod:`serl.algo.decay` — λ schedules (§5.1).
* :mod:`serl.algo.loss` — dual-clip PPO loss, entropy, masked mean (§1.6); SFT NLL (warm start).
* :mod:`serl.algo.masks` — the response format (one parser), action spans and the action-token mask from
  generated ids (§6, §8.3).
* :mod:`serl.algo.anchors` — anchor grouping (§4.2).

The algorithm's parts (``conf/algorithm/<part>/``, docs/configuration.md): estimators
:class:`~serl.algo.advantages.GRPO`, :mod:`~serl.algo.rloo`, :mod:`~serl.algo.gigpo`; losses
:class:`~serl.algo.loss.PPOClip`, :mod:`~serl.algo.dapo`, :mod:`~serl.algo.gspo`, :mod:`~serl.algo.distill`;
the reweighting :class:`~serl.algo.reweight.SerlReweight` (or none); sampling :mod:`~serl.algo.sampling`
(DAPO's dynamic sampling in :mod:`~serl.algo.dapo`).
"""
