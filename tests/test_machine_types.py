"""Instance and machine types and byte quantities that a cloud or the API server would refuse or misread, refused
at synth with the fix (the validators live in core/fields.py, shared by the clouds' configs)."""

from __future__ import annotations

import pytest

from core.fields import ec2_instance_type, gce_machine_type, whole_bytes
from tests.test_bad_input import AWS, GCP, KIND, TEAM, refused, run_synth  # noqa: F401 (run_synth: a fixture)


@pytest.mark.parametrize("content, fragment", [
    ((AWS % ("dev", "[]")) + "    systemPool: {instanceType: m7i.lrage}\n",
     "mlplatform:cluster.systemPool.instanceType: 'm7i.lrage' is not an EC2 instance type: its size 'lrage' is none "
     "of nano, micro, small, medium, large, xlarge, <n>xlarge, metal, metal-<n>xl; did you mean m7i.large?"),
    ((AWS % ("dev", "[]")) + "    gpuPools: [{name: a10g, instanceTypes: [g5.12xlrage], maxNodes: 1}]\n",
     "'g5.12xlrage' is not a GPU instance type this platform knows"),
    (GCP % ("ml", "dev", "[]") + "    systemPool: {machineType: e2-standrad-4}\n",
     "mlplatform:cluster.systemPool.machineType: 'e2-standrad-4' is not a Compute Engine machine type: expected "
     "<series>-<type>-<vCPUs>"),
    (GCP % ("ml", "dev", "[]") + "    gpuPools: [{name: t4, machineType: n1-stanard-8, accelerator: nvidia-tesla-t4, "
     "gpusPerNode: 1, maxNodes: 1}]\n", "did you mean n1-standard-8?"),
    (KIND + TEAM % ", storage: 100m", "mlplatform:teams[0].quota.storage: '100m' is 0.1 bytes, not a whole number of "
                                      "bytes ('m' is a thousandth); for megabytes write M (10^6) or Mi (2^20)"),
    (KIND + TEAM.replace("memory: 1Gi", "memory: 1.5") % "", "mlplatform:teams[0].quota.requests.memory: '1.5' is "
                                                             "1.5 bytes, not a whole number of bytes"),
    (KIND + "  mlplatform:monitoring: {storageSize: 50m}\n", "mlplatform:monitoring.storageSize: '50m' is 0.05 bytes"),
])
def test_misspelt_types_and_fractional_bytes_fail_at_synth(run_synth, content, fragment):
    refused(run_synth, content, fragment)


@pytest.mark.parametrize("value", ["m7i.large", "g5.12xlarge", "p5.48xlarge", "m7i-flex.xlarge", "u-6tb1.112xlarge",
                                   "c7gn.metal", "m7i.metal-24xl", "trn1.32xlarge", "t3.micro", "x2iedn.32xlarge"])
def test_ec2_instance_types_as_ec2_writes_them(value):
    assert ec2_instance_type(value) == value


@pytest.mark.parametrize("value", ["e2-standard-4", "n2d-highmem-8", "a2-highgpu-1g", "a3-megagpu-8g", "g2-standard-4",
                                   "e2-medium", "f1-micro", "custom-4-16384", "n2-custom-4-16384",
                                   "c3d-highcpu-4-lssd", "n1-standard-8", "x4-megamem-960-metal", "a2-ultragpu-8g",
                                   "a4-highgpu-8g"])
def test_compute_engine_machine_types_as_compute_engine_writes_them(value):
    assert gce_machine_type(value) == value


@pytest.mark.parametrize("value", ["100Mi", "1Ti", "0.5Ki", "1e3", "128974848", "129e6"])
def test_whole_byte_quantities(value):
    assert whole_bytes(value) == value
