//! Label keys and the mapping between [`GpuModel`] and the `nvidia.com/gpu.product` values that
//! NVIDIA GPU feature discovery puts on nodes (the driver's product name with spaces as `-`).

use spheron_core::GpuModel;

/// The extended resource NVIDIA's device plugin advertises.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// The GPU feature discovery label naming the product.
pub const GPU_PRODUCT_LABEL: &str = "nvidia.com/gpu.product";
/// The taint GPU nodes commonly carry so that only GPU workloads land on them.
pub const GPU_TAINT: &str = "nvidia.com/gpu";
/// Label on every object of a lease: the lease id (`lease-7`).
pub const LEASE_LABEL: &str = "spheron.io/lease";
/// Label on every object of a lease: the providing account.
pub const PROVIDER_LABEL: &str = "spheron.io/provider";
/// Label on a lease's namespace marking it as a tenant namespace (network policies key on it).
pub const TENANT_LABEL: &str = "spheron.io/tenant";
/// Label on pods: the workload's name within the lease.
pub const WORKLOAD_LABEL: &str = "spheron.io/workload";
/// Annotation on a lease's namespace: when the paid time runs out, in milliseconds on the
/// launcher's clock (the start-up reconcile reads it to expire or reattach the lease).
pub const ENDS_AT_ANNOTATION: &str = "spheron.io/ends-at";
/// Annotation on a lease's namespace: the name of its Job or Deployment.
pub const WORKLOAD_NAME_ANNOTATION: &str = "spheron.io/workload-name";
/// Annotation on a lease's namespace: `batch` (a Job) or `service` (a Deployment).
pub const WORKLOAD_KIND_ANNOTATION: &str = "spheron.io/workload-kind";
/// Annotation on a lease's namespace: the node the provider reserved for it, if any.
pub const NODE_ANNOTATION: &str = "spheron.io/node";
/// Annotation on a lease's namespace: the GPU model's catalog name.
pub const MODEL_ANNOTATION: &str = "spheron.io/model";
/// Annotation on a lease's namespace: how many GPUs the lease holds.
pub const GPUS_ANNOTATION: &str = "spheron.io/gpus";
/// `app.kubernetes.io/managed-by`.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "spheron";

/// The `nvidia.com/gpu.product` values GPU feature discovery reports for `model`, the first being
/// the most common (SXM before PCIe where both exist). Empty for a model without known labels.
pub fn product_labels(model: GpuModel) -> &'static [&'static str] {
    match model {
        GpuModel::H200 => &["NVIDIA-H200", "NVIDIA-H200-141GB-HBM3e"],
        GpuModel::H100Sxm => &["NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-SXM5-80GB"],
        GpuModel::H100Pcie => &["NVIDIA-H100-PCIe"],
        GpuModel::A100_80G => &["NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe"],
        GpuModel::A100_40G => &["NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB"],
        GpuModel::L40S => &["NVIDIA-L40S"],
        GpuModel::L4 => &["NVIDIA-L4"],
        GpuModel::A10 => &["NVIDIA-A10", "NVIDIA-A10G"],
        GpuModel::Rtx4090 => &["NVIDIA-GeForce-RTX-4090"],
        GpuModel::T4 => &["Tesla-T4"],
        // A model added to the catalog before its label is known here.
        _ => &[],
    }
}

/// The model a `nvidia.com/gpu.product` value names, if the catalog knows it. GPU feature
/// discovery may append a sharing suffix (`-SHARED`, `-MIG-...`); shared or MIG-partitioned GPUs
/// are not whole GPUs and are not offered.
pub fn model_from_product(product: &str) -> Option<GpuModel> {
    if product.contains("-MIG-") || product.ends_with("-SHARED") {
        return None;
    }
    GpuModel::ALL
        .into_iter()
        .find(|m| product_labels(*m).contains(&product))
        .or_else(|| product.parse().ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_model_round_trips_through_its_labels() {
        for m in GpuModel::ALL {
            for l in product_labels(m) {
                assert_eq!(model_from_product(l), Some(m), "{l}");
            }
        }
        assert_eq!(
            model_from_product("NVIDIA-A100-SXM4-80GB-MIG-1g.10gb"),
            None
        );
        assert_eq!(model_from_product("NVIDIA-H100-80GB-HBM3-SHARED"), None);
        assert_eq!(model_from_product("AMD-MI300X"), None);
    }
}
