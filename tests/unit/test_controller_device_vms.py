"""The controller never migrates a VM that holds a DRA claim or a host device (reference/dra.md §4.5), whatever the
policy: on a hot node whose VMs mostly hold devices, only the device-free VM may move, and the others are refused
with the reason."""

from __future__ import annotations

import pytest
from controller_builders import NOW, config, make_node, make_snapshot, make_vm, psi_config

from controller.plan import plan

DEVICE_VMS = {
    "dra": {"dra_claims": True},
    "hostdev": {"host_devices": True},
    "both": {"dra_claims": True, "host_devices": True},
}


def hot_node_of_device_vms():
    nodes = [make_node(f"n{i}", 0.0, psi_cpu=0.0, util_cpu=0.1) for i in range(3)]
    nodes.append(make_node("hot", 0.6, psi_cpu=0.6, util_cpu=0.95))
    vms = [make_vm(name, "hot", cpu=4, usage=4.0, **flags) for name, flags in DEVICE_VMS.items()]
    vms.append(make_vm("plain", "hot", cpu=4, usage=4.0))
    return make_snapshot(nodes, vms)


@pytest.mark.parametrize(
    "cfg",
    [config(), config(policy="psi-relief", actuator="migration"), psi_config(), config(dryRun=True)],
    ids=["descheduler", "psi-relief", "psi-relief-cpu", "dry-run"],
)
def test_device_holding_vms_are_never_moved(cfg):
    result = plan(hot_node_of_device_vms(), cfg, NOW)
    assert [m.vm for m in result.moves] == ["default/plain"]  # the node is hot: something must move, and only it
    reasons = {r.subject: r.reason for r in result.refusals}
    assert reasons == {
        "default/dra": "has DRA resource claims: pinned to its node",
        "default/hostdev": "has host devices (passthrough): pinned to its node",
        "default/both": "has host devices (passthrough): pinned to its node",
    }
