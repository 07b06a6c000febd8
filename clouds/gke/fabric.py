"""The GPU network of a GKE multi-node pool: the VPCs and subnets of its GPU NICs, the node pool's additional
node networks, GKE's Network and GKENetworkParamSet objects that let pods attach to them, and Google's NCCL
plugin installer on the pool's nodes.

Google's guides this follows: GKE, "Maximize GPU network bandwidth with GPUDirect and multi-networking"
(kubernetes-engine/docs/how-to/gpu-bandwidth-gpudirect-tcpx: a VPC, subnet and firewall rule per GPU NIC, the
cluster's multi-networking, the pool's additional node networks, a GKENetworkParamSet and Network per NIC, the
installer DaemonSet); GKE's A3 Ultra guide and the VPC docs' "RDMA network profiles" for RDMA (one VPC of the
zone's RoCE network profile, a subnet per RDMA NIC, deviceMode RDMA); cluster-toolkit (commit 1047080) wires the
same: examples/gke-a3-megagpu, examples/gke-a3-ultragpu, modules/scheduler/gke-cluster's network templates.
A4 takes A3 Ultra's RDMA fabric unchanged: cluster-toolkit's examples/gke-a4 differs from gke-a3-ultragpu only in
names, and Google's manifests at the pinned commit install one gIB release on both (nccl-rdma-installer.yaml
selects nvidia-h200-141gb and nvidia-b200; nccl-test-a4.yaml has nccl-test.yaml's interfaces and image).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

from clouds.gke.config import GPU_NIC_SUBNET_PREFIX, GkeClusterConfig, GkeGpuPool, GpuFabric
from core.handle import GpuPool
from core.vocabulary import KUBE_SYSTEM_NAMESPACE, POOL_LABEL, SYSTEM_NODE_CRITICAL
from versions import (GKE_PAUSE_IMAGE, GPUDIRECT_RDMA_INSTALLER_IMAGE, GPUDIRECT_TCPX_DAEMON_IMAGE,
                      GPUDIRECT_TCPX_INSTALLER_IMAGE, GPUDIRECT_TCPXO_DAEMON_IMAGE, GPUDIRECT_TCPXO_INSTALLER_IMAGE,
                      GPUDIRECT_TCPXO_PREINSTALL_IMAGE, NRI_DEVICE_INJECTOR_IMAGE)

NETWORKING_API = "networking.gke.io/v1"
# The pod's interface on the cluster's own VPC: GKE names it "default" (the Network GKE creates itself).
DEFAULT_NETWORK = "default"
# Where the installers put NCCL and its plugin on the node; GKE mounts the node's NVIDIA folder into every GPU
# container at /usr/local/nvidia, so pods find them at /usr/local/nvidia/lib64.
NODE_NVIDIA_LIB = "/home/kubernetes/bin/nvidia/lib64"
CONTAINER_NVIDIA_LIB = "/usr/local/nvidia/lib64"


@dataclass(frozen=True)
class Nic:
    """One NIC a multi-node pool's nodes get beside the primary: its subnet, and the Network a pod names."""

    # The GKE Network (and GKENetworkParamSet) of the NIC, which a pod's networking.gke.io/interfaces names.
    network: str
    # The Compute Engine network and subnetwork it is in.
    vpc: str
    subnet: str
    cidr: str
    device_mode: str
    mtu: int
    # RDMA NICs share one VPC of the zone's RoCE network profile; the others have a VPC each.
    roce: bool = False
    # Host traffic only (A3 Ultra's second gVNIC): GKE gets its Network, a pod takes only the GPU NICs.
    host: bool = False


def pool_nics(spec: GkeClusterConfig, pool: GkeGpuPool) -> list[Nic]:
    """The NICs a multi-node pool adds, in the order the node's interfaces get them (eth1 onwards)."""
    fabric = pool.fabric
    assert fabric is not None
    subnets = ipaddress.ip_network(spec.gpu_nic_block(pool)).subnets(new_prefix=GPU_NIC_SUBNET_PREFIX)
    prefix = f"{spec.name}-{pool.name}"
    # A host gVNIC's VPC at MTU 8896, as cluster-toolkit's vpc module makes A3 Ultra's (its default mtu).
    nics = [Nic(f"{pool.name}-host-{index}", f"{prefix}-host-{index}", f"{prefix}-host-{index}", str(next(subnets)),
                "NetDevice", 8896, host=True)
            for index in range(1, fabric.host_nics + 1)]
    for index in range(fabric.gpu_nics):
        cidr = str(next(subnets))
        if fabric.kind == "rdma":
            nics.append(Nic(f"{pool.name}-rdma-{index}", f"{prefix}-rdma", f"{prefix}-rdma-{index}", cidr,
                            fabric.device_mode, fabric.mtu, roce=True))
        else:
            nics.append(Nic(f"{pool.name}-gpu-{index}", f"{prefix}-gpu-{index}", f"{prefix}-gpu-{index}", cidr,
                            fabric.device_mode, fabric.mtu))
    return nics


def pod_interfaces(pool: GkeGpuPool, nics: Sequence[Nic]) -> list[dict[str, str]]:
    """The networking.gke.io/interfaces a whole-node pod of the pool takes: eth0 on the cluster's network, then
    the GPU NICs. On RDMA the node's second gVNIC is eth1 and not the pod's, so the RDMA NICs start at eth2
    (container-engine-accelerators gpudirect-rdma/nccl-test.yaml); on TCPX and TCPXO at eth1."""
    first = 1 + (pool.fabric.host_nics if pool.fabric else 0)
    gpu = [nic for nic in nics if not nic.host]
    return [{"interfaceName": "eth0", "network": DEFAULT_NETWORK},
            *({"interfaceName": f"eth{first + index}", "network": nic.network} for index, nic in enumerate(gpu))]


def pod_annotations(pool: GkeGpuPool, nics: Sequence[Nic]) -> dict[str, str]:
    """The annotations that give a pod the pool's GPU NICs (GKE multi-networking) and, on TCPX and TCPXO, its
    GPUDirect daemon the node's GPUs (the NRI device injector reads devices.gke.io/container.<container>)."""
    annotations = {"networking.gke.io/default-interface": "eth0",
                   "networking.gke.io/interfaces": json.dumps(pod_interfaces(pool, nics))}
    fabric = pool.fabric
    if fabric is not None and fabric.kind in DAEMONS:
        devices = [*(f"/dev/nvidia{index}" for index in range(pool.gpus)), "/dev/nvidiactl", "/dev/nvidia-uvm"]
        if fabric.kind == "tcpxo":
            # The DMA-buf import helper the installer's pre-installation step loads (modprobe import-helper).
            devices.append("/dev/dmabuf_import_helper")
        annotations[f"devices.gke.io/container.{DAEMONS[fabric.kind]}"] = "".join(f"- path: {d}\n" for d in devices)
    return annotations


# The receive-datapath daemon (RxDM, tcpgpudmarxd) a TCPX or TCPXO pod runs beside NCCL, by the container name
# Google's test pods give it (gpudirect-tcpx/ and gpudirect-tcpxo/nccl-test-latest.yaml at the pinned commit),
# which the device annotation above names. RDMA (gIB) needs none.
DAEMONS = {"tcpx": "tcpx-daemon", "tcpxo": "tcpxo-daemon"}
# Where the host's sysfs and /proc/sys appear in the daemon, which it reads to find the GPUs' and NICs' PCI
# places and tunes the NICs through, unprivileged (the same manifests).
_HOST_SYS = ({"name": "gpudirect-sys", "hostPath": {"path": "/sys"}}, "/hostsysfs")
_HOST_PROC_SYS = ({"name": "gpudirect-proc-sys", "hostPath": {"path": "/proc/sys"}}, "/hostprocsysfs")
_NVIDIA_LIB = ({"name": "gpudirect-nvidia-lib", "hostPath": {"path": NODE_NVIDIA_LIB}}, CONTAINER_NVIDIA_LIB)
# TCPX's daemon serves the plugin over Unix sockets in --uds_path; NCCL's plugin looks for them in /tmp, where
# Google's test mounts the same volume. An emptyDir, as gpudirect-tcpx/nccl-test.yaml has it, rather than
# nccl-test-latest.yaml's hostPath /run/tcpx: the sockets are the pod's own, and nothing is left on the node.
_TCPX_SOCKET = ({"name": "gpudirect-tcpx-socket", "emptyDir": {}}, "/run/tcpx")
# TCPXO's LLCM: the NICs' aperture devices, which the installer's pre-installation step binds under this folder.
_APERTURE = ({"name": "gpudirect-aperture-devices", "hostPath": {"path": "/dev/aperture_devices"}},
             "/dev/aperture_devices")
# gIB: the plugin, its NCCL and set_nccl_env.sh, which the RDMA installer copies to the node's
# /home/kubernetes/bin/gib and Google's test mounts at /usr/local/gib (gpudirect-rdma/nccl-test.yaml).
GIB_FOLDER = "/usr/local/gib"
_GIB = ({"name": "gpudirect-gib", "hostPath": {"path": "/home/kubernetes/bin/gib"}}, GIB_FOLDER)


# Host folders a pod only reads (libraries, scripts): mounted read-only, so that no pod changes what the node's
# other pods load. Team namespaces' pod security holds their containers to it (components/pod_security.py).
_READ_ONLY = {_NVIDIA_LIB[0]["name"], _GIB[0]["name"]}


def _mount(volume: tuple[dict[str, Any], str], path: str | None = None) -> dict[str, Any]:
    mount: dict[str, Any] = {"name": volume[0]["name"], "mountPath": path or volume[1]}
    return mount | {"readOnly": True} if mount["name"] in _READ_ONLY else mount


def _daemon(fabric: GpuFabric) -> dict[str, Any]:
    """The GPUDirect daemon as Google's nccl-test-latest.yaml runs it (image, command, capabilities, mounts),
    as a native sidecar: an init container with restartPolicy Always starts before the pod's containers, runs
    beside them, and is stopped once they end, so it never keeps a Job's pod running (Kubernetes' sidecar
    containers, on by default since 1.29 and GA in 1.33; the platform's clusters run 1.33 to 1.36)."""
    if fabric.kind == "tcpx":
        command = ["/tcpgpudmarxd/build/app/tcpgpudmarxd", "--gpu_nic_preset", "a3vm", "--gpu_shmem_type", "fd",
                   # With its quotes, as the manifest's escaped ones pass it and xpk's TCPX sidecar does
                   # (AI-Hypercomputer/xpk, workload_decorators/tcpx_decorator.py).
                   "--uds_path", _TCPX_SOCKET[1], "--setup_param", '"--verbose 128 2 0 "']
        image, capabilities, mounts = GPUDIRECT_TCPX_DAEMON_IMAGE, ["NET_ADMIN"], [_TCPX_SOCKET]
    else:
        # exec: the entrypoint, not a shell, gets the SIGTERM that ends the sidecar.
        command = ["/bin/sh", "-c", "set -ex\nchmod 755 /fts/entrypoint_rxdm_container.sh\n"
                                    "exec /fts/entrypoint_rxdm_container.sh --num_hops=2\n"]
        image, capabilities, mounts = GPUDIRECT_TCPXO_DAEMON_IMAGE, ["NET_ADMIN", "NET_BIND_SERVICE"], []
    return {"name": DAEMONS[fabric.kind], "image": image, "restartPolicy": "Always", "command": command,
            "securityContext": {"capabilities": {"add": capabilities}},
            "env": [{"name": "LD_LIBRARY_PATH", "value": CONTAINER_NVIDIA_LIB}],
            "volumeMounts": [_mount(v) for v in (_NVIDIA_LIB, *mounts, _HOST_SYS, _HOST_PROC_SYS)]}


def fabric_pod(fabric: GpuFabric) -> dict[str, Any]:
    """What a whole-node pod on the fabric adds to its spec, beside the pool's annotations: the GPUDirect daemon
    (initContainers), the volumes, and the volumeMounts of the container that runs NCCL: the node's NCCL and
    plugin at /usr/local/nvidia/lib64 (GKE mounts the node's NVIDIA folder into GPU containers too; Google's
    test pods mount it explicitly), TCPX's sockets at /tmp, TCPXO's aperture devices, gIB at /usr/local/gib;
    the capabilities that container adds, and on RDMA the script it sources first."""
    if fabric.kind == "rdma":
        # ncclEnvScript: what that container sources before NCCL starts, in each process (gIB's settings).
        return {"initContainers": [], "volumes": [_NVIDIA_LIB[0], _GIB[0]],
                "volumeMounts": [_mount(_NVIDIA_LIB), _mount(_GIB)], "capabilities": [],
                "ncclEnvScript": f"{GIB_FOLDER}/scripts/set_nccl_env.sh"}
    extra = [(_TCPX_SOCKET, "/tmp")] if fabric.kind == "tcpx" else [(_APERTURE, None)]
    volumes = [_NVIDIA_LIB, *(volume for volume, _ in extra), _HOST_SYS, _HOST_PROC_SYS]
    return {"initContainers": [_daemon(fabric)], "volumes": [volume for volume, _ in volumes],
            "volumeMounts": [_mount(_NVIDIA_LIB), *(_mount(volume, path) for volume, path in extra)],
            # The capabilities that container adds: TCPX's test container locks memory (IPC_LOCK).
            "capabilities": ["IPC_LOCK"] if fabric.kind == "tcpx" else []}


def nccl_env(fabric: GpuFabric, gpu_nics: int) -> dict[str, str]:
    """The environment NCCL needs in a whole-node pod to use the pool's GPU NICs through Google's plugin.

    TCPX: the settings of Google's own test (container-engine-accelerators 992db81, gpudirect-tcpx/nccl-config.yaml,
    run-nccl.sh) but its CPU bindings, which go with its taskset. TCPXO: the "NCCL configs" of the plugin release
    installed (gpudirect-tcpxo/README.md, "Jan 9, 2026"), with its library folder where GKE mounts the
    installer's output, and the aperture devices its test mounts (nccl-test-latest.yaml). RDMA: Google's plugin
    (gIB) sets its own NCCL environment with /usr/local/gib/scripts/set_nccl_env.sh, which a pod sources with
    the node's /home/kubernetes/bin/gib mounted at /usr/local/gib (gpudirect-rdma/nccl-test.yaml): only the
    library path here.
    """
    ifnames = ",".join(f"eth{index}" for index in range(1, gpu_nics + 1))
    common = {"LD_LIBRARY_PATH": CONTAINER_NVIDIA_LIB}
    if fabric.kind == "tcpx":
        return common | {
            "NCCL_SOCKET_IFNAME": "eth0", "NCCL_ALGO": "Ring,Tree", "NCCL_PROTO": "Simple", "NCCL_CROSS_NIC": "0",
            "NCCL_NET_GDR_LEVEL": "PIX", "NCCL_P2P_PXN_LEVEL": "0", "NCCL_GPUDIRECTTCPX_SOCKET_IFNAME": ifnames,
            "NCCL_GPUDIRECTTCPX_CTRL_DEV": "eth0", "NCCL_DYNAMIC_CHUNK_SIZE": "524288",
            "NCCL_P2P_NET_CHUNKSIZE": "524288", "NCCL_P2P_PCI_CHUNKSIZE": "524288",
            "NCCL_P2P_NVL_CHUNKSIZE": "1048576", "NCCL_BUFFSIZE": "4194304", "NCCL_NSOCKS_PERTHREAD": "4",
            "NCCL_SOCKET_NTHREADS": "1", "NCCL_GPUDIRECTTCPX_PROGRAM_FLOW_STEERING_WAIT_MICROS": "500000"}
    if fabric.kind == "tcpxo":
        return common | {
            "NCCL_FASTRAK_CTRL_DEV": "eth0", "NCCL_FASTRAK_IFNAME": ifnames, "NCCL_SOCKET_IFNAME": "eth0",
            "NCCL_CROSS_NIC": "0", "NCCL_PROTO": "Simple,LL128", "NCCL_MIN_NCHANNELS": "4",
            "NCCL_TUNER_PLUGIN": "libnccl-tuner.so",
            "NCCL_TUNER_CONFIG_PATH": f"{CONTAINER_NVIDIA_LIB}/a3plus_tuner_config.textproto",
            "NCCL_SHIMNET_GUEST_CONFIG_CHECKER_CONFIG_FILE": f"{CONTAINER_NVIDIA_LIB}/a3plus_guest_config.textproto",
            "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7", "NCCL_NVLSTREE_MAX_CHUNKSIZE": "131072",
            "NCCL_P2P_NET_CHUNKSIZE": "524288", "NCCL_P2P_PCI_CHUNKSIZE": "524288",
            "NCCL_P2P_NVL_CHUNKSIZE": "1048576", "NCCL_FASTRAK_NUM_FLOWS": "2", "NCCL_FASTRAK_USE_SNAP": "1",
            "NCCL_FASTRAK_PLUGIN_ACCEPT_TIMEOUT_MS": "600000", "NCCL_FASTRAK_ENABLE_CONTROL_CHANNEL": "0",
            "NCCL_BUFFSIZE": "8388608", "NCCL_NET_GDR_LEVEL": "PIX", "NCCL_FASTRAK_ENABLE_HOTPATH_LOGGING": "0",
            "NCCL_FASTRAK_USE_LLCM": "1", "NCCL_NVLS_ENABLE": "1",
            "NCCL_FASTRAK_LLCM_DEVICE_DIRECTORY": "/dev/aperture_devices"}
    return common


def gpu_networks(name: str, spec: GkeClusterConfig, pool: GkeGpuPool, nics: Sequence[Nic],
                 opts: pulumi.ResourceOptions) -> list[gcp.container.NodePoolNetworkConfigAdditionalNodeNetworkConfigArgs]:
    """The VPCs, subnets and firewall rules of a multi-node pool's NICs; the pool's additional node networks.
    Resources are named <component>-<pool>-..., the cloud's names <cluster>-<pool>-..."""

    def logical(cloud_name: str) -> str:
        return f"{name}-{cloud_name.removeprefix(spec.name + '-')}"

    networks: dict[str, gcp.compute.Network] = {}
    configs = []
    for nic in nics:
        if nic.vpc not in networks:
            networks[nic.vpc] = gcp.compute.Network(
                logical(nic.vpc) + "-vpc", name=nic.vpc, auto_create_subnetworks=False, mtu=nic.mtu,
                # A RoCE VPC is of its zone's RDMA network profile, and its NICs only in that zone (VPC docs,
                # "RDMA network profiles"); the pool is in one zone (a compact placement's).
                network_profile=(f"projects/{spec.project}/global/networkProfiles/{pool.zones[0]}-vpc-roce"
                                 if nic.roce and pool.zones else None),
                opts=opts)
        network = networks[nic.vpc]
        subnet = gcp.compute.Subnetwork(logical(nic.subnet), name=nic.subnet,
                                        network=network.id, region=spec.region, ip_cidr_range=nic.cidr, opts=opts)
        if not nic.roce:
            # Between the pool's own nodes only: a VPC's implied rules deny all ingress. A RoCE VPC allows
            # ingress implicitly and takes no firewall rules (VPC docs, "RDMA network profiles").
            gcp.compute.Firewall(
                logical(nic.vpc) + "-internal", name=nic.vpc, network=network.id, direction="INGRESS",
                description=f"GPU traffic between the nodes of GPU pool {pool.name}", source_ranges=[nic.cidr],
                allows=[gcp.compute.FirewallAllowArgs(protocol="tcp"), gcp.compute.FirewallAllowArgs(protocol="udp"),
                        gcp.compute.FirewallAllowArgs(protocol="icmp")],
                opts=opts)
        configs.append(gcp.container.NodePoolNetworkConfigAdditionalNodeNetworkConfigArgs(
            network=network.name, subnetwork=subnet.name))
    return configs


def _tolerations(gpu_pool: GpuPool) -> list[dict[str, str]]:
    return [taint.toleration() for taint in gpu_pool.taints]


def _on_pool(gpu_pool: GpuPool) -> dict[str, Any]:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": POOL_LABEL, "operator": "In", "values": [gpu_pool.name]}]}]}}}


def _daemon_set(app: str, gpu_pool: GpuPool, pod: dict[str, Any]) -> dict[str, Any]:
    """A node agent of Google's manifests, held to the pool's nodes (theirs select every node of the GPU model)
    and tolerating the pool's taints (theirs tolerate every taint)."""
    labels = {"k8s-app": app}
    return {
        "selector": {"matchLabels": labels},
        "updateStrategy": {"type": "RollingUpdate"},
        "template": {"metadata": {"labels": labels}, "spec": {
            "priorityClassName": SYSTEM_NODE_CRITICAL, "affinity": _on_pool(gpu_pool),
            "tolerations": _tolerations(gpu_pool), "hostNetwork": True, "hostPID": True, **pod}},
    }


def _pause() -> dict[str, Any]:
    return {"name": "pause", "image": GKE_PAUSE_IMAGE}


def installer_pod(fabric: GpuFabric) -> dict[str, Any]:
    """The pod of Google's NCCL plugin installer for the fabric, as its manifest has it (the init container
    copies NCCL and the plugin to the node; a pause container keeps the pod, so the copy runs once per node)."""
    if fabric.kind == "rdma":
        return {
            "volumes": [{"name": "library-dir-host", "hostPath": {"path": NODE_NVIDIA_LIB,
                                                                  "type": "DirectoryOrCreate"}},
                        {"name": "gib", "hostPath": {"path": "/home/kubernetes/bin/gib"}}],
            "initContainers": [{
                "name": "nccl-rdma-installer", "image": GPUDIRECT_RDMA_INSTALLER_IMAGE,
                "resources": {"requests": {"cpu": "150m"}}, "securityContext": {"privileged": True},
                "volumeMounts": [{"name": "library-dir-host", "mountPath": f"/usr/local{NODE_NVIDIA_LIB}"},
                                 {"name": "gib", "mountPath": "/usr/local/home/kubernetes/bin/gib"}],
                "command": ["/bin/sh", "-c"],
                "args": ["set -ex\n/scripts/container_entry.sh install\n"
                         f"cp -r /var/lib/gib/lib64/. /usr/local{NODE_NVIDIA_LIB}\n"
                         "cp -r /var/lib/gib/. /usr/local/home/kubernetes/bin/gib\n"
                         "echo \"installation finishes\"\n"]}],
            "containers": [_pause()]}
    folder = f"/var/lib/{fabric.kind}"
    image = GPUDIRECT_TCPX_INSTALLER_IMAGE if fabric.kind == "tcpx" else GPUDIRECT_TCPXO_INSTALLER_IMAGE
    install = {
        "name": f"nccl-{fabric.kind}-installer", "image": image,
        "resources": {"requests": {"cpu": "150m"}}, "securityContext": {"privileged": True},
        "volumeMounts": [{"name": "var-lib", "mountPath": "/var/lib"},
                         {"name": "library-dir-host", "mountPath": "/usr/local"}],
        "command": ["/bin/sh", "-c"],
        "args": ["set -ex\n"
                 + ("chmod 755 /scripts/container_entry.sh\n" if fabric.kind == "tcpxo" else "")
                 + "/scripts/container_entry.sh install --install-nccl\nmkdir -p /usr/local/nvidia/lib64\n"
                 f"cp -r {folder}/lib64/. /usr/local/nvidia/lib64\necho \"installation finishes\"\n"]}
    init = [install]
    if fabric.kind == "tcpxo":
        # On the host: accept the plugin's TCP traffic, load the DMA-buf import helper, and expose the NICs'
        # aperture devices under /dev/aperture_devices for the pods (Google's manifest, verbatim in effect).
        init.insert(0, {
            "name": "pre-installation", "image": GPUDIRECT_TCPXO_PREINSTALL_IMAGE,
            "securityContext": {"privileged": True},
            "command": ["nsenter", "-at", "1", "--", "sh", "-c", TCPXO_PREINSTALL]})
    # Google's manifests also declare a volume of {folder} that no container mounts (the copy reads it through
    # /var/lib): left out, as it does nothing.
    return {
        "volumes": [{"name": "var-lib", "hostPath": {"path": "/var/lib"}},
                    {"name": "library-dir-host", "hostPath": {"path": "/home/kubernetes/bin"}}],
        "initContainers": init, "containers": [_pause()]}


TCPXO_PREINSTALL = """/sbin/iptables -I INPUT -p tcp -m tcp -j ACCEPT && modprobe import-helper
sudo mkdir -p /dev/aperture_devices
while IFS= read -r line; do
  BDF=$( echo "$line" | awk '{print $1}' );
  target_aperture_path="/dev/aperture_devices/$BDF"
  host_aperture_device=$(readlink -f "/sys/bus/pci/devices/$BDF");
  sudo mkdir -p $target_aperture_path;
  sudo umount -R $target_aperture_path;
  sudo mount --bind $host_aperture_device $target_aperture_path;
done < <(lspci -nn -D | grep '1ae0:0084')
if [ -d /dev/aperture_devices ]; then
    chmod -R a+r /dev/aperture_devices/
    chmod a+rw /dev/aperture_devices/*/resource*
fi
"""


def nri_injector_pod() -> dict[str, Any]:
    """Google's NRI device injector, which TCPX and TCPXO need: it hands the GPU devices to a pod's GPUDirect
    daemon sidecar by the pod's devices.gke.io/container.<name> annotation (nri_device_injector/
    nri-device-injector.yaml). Both daemons of Google's nccl-test-latest.yaml run unprivileged and get the GPUs
    that way; only TCPX's older nccl-test.yaml ran its daemon privileged instead."""
    return {
        "containers": [{"name": "device-injector", "image": NRI_DEVICE_INJECTOR_IMAGE,
                        "resources": {"requests": {"cpu": "150m"}}, "securityContext": {"privileged": True},
                        "volumeMounts": [{"name": "dev", "mountPath": "/dev"},
                                         {"name": "nri", "mountPath": "/var/run/nri"}]}],
        "volumes": [{"name": "nri", "hostPath": {"path": "/var/run/nri"}},
                    {"name": "dev", "hostPath": {"path": "/dev"}}]}


def fabric_objects(name: str, pool: GkeGpuPool, gpu_pool: GpuPool, nics: Sequence[Nic],
                   opts: pulumi.ResourceOptions) -> list[pulumi.Resource]:
    """In the cluster: a GKENetworkParamSet and a Network per NIC, Google's NCCL plugin installer on the pool's
    nodes, and for TCPX and TCPXO the NRI device injector."""
    fabric = pool.fabric
    assert fabric is not None
    resources: list[pulumi.Resource] = []
    for nic in nics:
        params = k8s.apiextensions.CustomResource(
            f"{name}-{nic.network}-params", api_version=NETWORKING_API, kind="GKENetworkParamSet",
            metadata=ObjectMetaArgs(name=nic.network),
            spec={"vpc": nic.vpc, "vpcSubnet": nic.subnet, "deviceMode": nic.device_mode}, opts=opts)
        resources.append(params)
        resources.append(k8s.apiextensions.CustomResource(
            f"{name}-{nic.network}-network", api_version=NETWORKING_API, kind="Network",
            metadata=ObjectMetaArgs(name=nic.network),
            spec={"type": "Device", "parametersRef": {"group": "networking.gke.io", "kind": "GKENetworkParamSet",
                                                      "name": nic.network}},
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[params]))))
    agents = [(f"nccl-{fabric.kind}-installer-{pool.name}", installer_pod(fabric))]
    if fabric.kind in DAEMONS:
        agents.append((f"nri-device-injector-{pool.name}", nri_injector_pod()))
    for app, pod in agents:
        resources.append(k8s.apps.v1.DaemonSet(
            f"{name}-{app}", metadata=ObjectMetaArgs(name=app, namespace=KUBE_SYSTEM_NAMESPACE,
                                                      labels={"k8s-app": app}),
            # The manifest's own (camelCase) fields, as Google's manifests have them: the SDK passes them through.
            spec=cast(Any, _daemon_set(app, gpu_pool, pod)), opts=opts))
    return resources
