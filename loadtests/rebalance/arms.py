"""The arms of a rebalancing comparison, by name, and which of them run when none are named.

Why it exists: the demo and `autonomic bench rebalance` must mean the same thing by `descheduler-compatible`, and
that is the strongest baseline: the KubeVirtRelieveAndMigrate profile as the operator's main branch generates it
(docs/controller-policies.md). The 4.21 GA profile stays reachable by name so a benchmark can show both. No heavy
imports: the command-line parsers read this before anything starts; `run.policy_config` builds the configs.
"""

from __future__ import annotations

NO_OP, BASELINE, BASELINE_GA, PSI_RELIEF = "no-op", "descheduler-compatible", "descheduler-compatible-ga", "psi-relief"
DESCHEDULER = "descheduler"  # the real binary (loadtests/rebalance/descheduler_arm.py)
ARMS: dict[str, str] = {
    NO_OP: "no controller: the pressure baseline",
    BASELINE: "the descheduler's KubeVirtRelieveAndMigrate profile as the operator's main branch generates it "
    "(evictionLimits.node 2, KubevirtMigrationAware cooldown): the migration baseline",
    BASELINE_GA: "the same profile as release-4.21 GA generates it (one eviction per node per cycle, no cooldown)",
    PSI_RELIEF: "ours: predicted relief, named targets (VirtualMachineInstanceMigrations)",
    DESCHEDULER: "the real sigs.k8s.io/descheduler (make descheduler) with the operator's 4.21 GA policy for the "
    "profile: the peer itself (skipped when not built)",
}
DEFAULT_ARMS = (NO_OP, BASELINE, PSI_RELIEF)
# descheduler-compatible arms -> deschedulerCompatible.profileVersion
PROFILE_VERSIONS = {BASELINE: "main", BASELINE_GA: "4.21-ga"}
