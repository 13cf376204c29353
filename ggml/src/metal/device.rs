//! Metal device discovery.

use super::MetalDeviceInfo;
use objc2::rc::Retained;
use objc2::runtime::ProtocolObject;
use objc2_metal::{MTLDevice, MTLGPUFamily};

/// Every Metal device our kernels run on (see `all`).
pub(super) fn list() -> Vec<MetalDeviceInfo> {
    all()
        .iter()
        .enumerate()
        .map(|(index, d)| MetalDeviceInfo {
            index,
            name: d.name().to_string(),
            working_set: d.recommendedMaxWorkingSetSize(),
            allocated: d.currentAllocatedSize() as u64,
            unified: d.hasUnifiedMemory(),
        })
        .collect()
}

/// The devices our kernels run on, in Metal's order: Apple GPUs of family
/// Apple7 (M1, A14) or newer. The kernels take simdgroups of 32 threads
/// and `simdgroup_matrix`, which an Intel Mac's AMD or Intel GPU does not
/// promise; those are left out, and the model runs on the CPU there.
pub(crate) fn all() -> Vec<Retained<ProtocolObject<dyn MTLDevice>>> {
    #[cfg(target_os = "macos")]
    let devices: Vec<_> = objc2_metal::MTLCopyAllDevices().iter().collect();
    #[cfg(not(target_os = "macos"))]
    let devices: Vec<_> = objc2_metal::MTLCreateSystemDefaultDevice()
        .into_iter()
        .collect();
    devices
        .into_iter()
        .filter(|d| d.supportsFamily(MTLGPUFamily::Apple7))
        .collect()
}
