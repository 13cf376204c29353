//! The kernels' library on one device: the embedded MSL compiled once, on
//! first use, and compute pipelines made on demand, specialised by function
//! constants and cached by (kernel, constants).

use std::collections::HashMap;
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::Mutex;

use objc2::rc::Retained;
use objc2::runtime::ProtocolObject;
use objc2_foundation::NSString;
use objc2_metal::{
    MTLCompileOptions, MTLComputePipelineState, MTLDataType, MTLDevice, MTLFunctionConstantValues,
    MTLLibrary,
};

use crate::backend::BackendError;

/// A function constant's value, by index (`[[function_constant(i)]]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Constant {
    Bool(bool),
    U32(u32),
}

type Pipeline = Retained<ProtocolObject<dyn MTLComputePipelineState>>;

pub struct Library {
    device: Retained<ProtocolObject<dyn MTLDevice>>,
    library: Retained<ProtocolObject<dyn MTLLibrary>>,
    pipelines: Mutex<HashMap<(String, Vec<Constant>), Pipeline>>,
}

impl Library {
    /// Compiles the embedded sources for `device` (Metal's compiler runs
    /// here, on the user's machine: a failure names the first error).
    pub fn new(device: Retained<ProtocolObject<dyn MTLDevice>>) -> Result<Library, BackendError> {
        let source = NSString::from_str(&super::library_source());
        let options = MTLCompileOptions::new();
        let library = device
            .newLibraryWithSource_options_error(&source, Some(&options))
            .map_err(|e| {
                let what = e.localizedDescription().to_string();
                let first = what.lines().next().unwrap_or("").to_string();
                BackendError(format!("Metal: compiling llm's kernels failed: {first}"))
            })?;
        Ok(Library {
            device,
            library,
            pipelines: Mutex::new(HashMap::new()),
        })
    }

    /// The pipeline of kernel `name` with function constants 0, 1, ... set to
    /// `constants`, made once.
    pub fn pipeline(&self, name: &str, constants: &[Constant]) -> Result<Pipeline, BackendError> {
        let key = (name.to_string(), constants.to_vec());
        let mut cache = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let values = MTLFunctionConstantValues::new();
        for (i, c) in constants.iter().enumerate() {
            // SAFETY (both arms): the pointer is to a live value of the type
            // the data type names; Metal copies it before returning.
            match *c {
                Constant::Bool(v) => {
                    let mut b = v as u8;
                    let ptr = NonNull::from(&mut b).cast::<c_void>();
                    unsafe { values.setConstantValue_type_atIndex(ptr, MTLDataType::Bool, i) };
                }
                Constant::U32(v) => {
                    let mut u = v;
                    let ptr = NonNull::from(&mut u).cast::<c_void>();
                    unsafe { values.setConstantValue_type_atIndex(ptr, MTLDataType::UInt, i) };
                }
            }
        }
        let fail = |what: &str, e: Retained<objc2_foundation::NSError>| {
            BackendError(format!(
                "Metal: {what} {name}: {}",
                e.localizedDescription()
            ))
        };
        let function = self
            .library
            .newFunctionWithName_constantValues_error(&NSString::from_str(name), &values)
            .map_err(|e| fail("no kernel", e))?;
        let pipeline = self
            .device
            .newComputePipelineStateWithFunction_error(&function)
            .map_err(|e| fail("cannot make a pipeline of", e))?;
        cache.insert(key, pipeline.clone());
        Ok(pipeline)
    }
}
