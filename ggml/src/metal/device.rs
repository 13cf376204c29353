//! Metal device discovery.

use super::MetalDeviceInfo;
use objc2::rc::Retained;
use objc2::runtime::ProtocolObject;
use objc2_metal::MTLDevice;

/// Every Metal device: on macOS all of them (an Intel Mac may have two),
/// elsewhere the system's default.
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

/// The devices themselves, in Metal's order.
pub(crate) fn all() -> Vec<Retained<ProtocolObject<dyn MTLDevice>>> {
    #[cfg(target_os = "macos")]
    {
        let devices = objc2_metal::MTLCopyAllDevices();
        devices.iter().collect()
    }
    #[cfg(not(target_os = "macos"))]
    {
        objc2_metal::MTLCreateSystemDefaultDevice()
            .into_iter()
            .collect()
    }
}
