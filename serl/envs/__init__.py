"""Environment families behind the :class:`serl.envs.base.EnvSuite` contract (docs/design.md §2, §5).

Importing this package (or any adapter module in it) never imports an environment engine: ``alfworld`` and
``textworld`` are imported lazily, inside the ALFWorld adapter, on first use.
"""
