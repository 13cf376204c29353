//! Memory-mapped safetensors files, and a checkpoint folder: one
//! `model.safetensors`, or shards listed by `model.safetensors.index.json`
//! (without an index: `model.safetensors` or `model-0000N-of-0000M`, or
//! EXL2's `output.safetensors` or `output-0000N-of-0000M`, and only where
//! none of those is there every `*.safetensors`). The tensors of all shards
//! form one namespace.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde_json::Value;

use super::header::{parse_with_len, Dtype, Header, TensorInfo, MAX_HEADER_BYTES};
use super::SafetensorsError;

pub struct SafetensorsFile {
    pub path: PathBuf,
    pub header: Header,
    map: Mmap,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<SafetensorsFile, SafetensorsError> {
        let fail =
            |e: std::io::Error| SafetensorsError::new(format!("cannot read it: {e}")).in_file(path);
        let file = File::open(path).map_err(fail)?;
        let len = file.metadata().map_err(fail)?.len();
        if len == 0 {
            return Err(SafetensorsError::new("the file is empty").in_file(path));
        }
        // SAFETY: the mapping is read-only; a model file changed underneath a
        // running program is outside what any loader can defend against.
        let map = unsafe { Mmap::map(&file) }.map_err(fail)?;
        let head = &map[..map.len().min((8 + MAX_HEADER_BYTES) as usize)];
        let header = parse_with_len(head, len).map_err(|e| e.in_file(path))?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            header,
            map,
        })
    }

    /// A tensor's bytes (its range was checked against the file at open).
    pub fn data(&self, t: &TensorInfo) -> &[u8] {
        &self.map[t.start as usize..t.end as usize]
    }
}

/// Where a tensor of a checkpoint lives.
#[derive(Clone, Copy, Debug)]
struct Slot {
    file: usize,
    tensor: usize,
}

pub struct Checkpoint {
    pub dir: PathBuf,
    pub files: Vec<SafetensorsFile>,
    by_name: HashMap<String, Slot>,
}

const INDEX: &str = "model.safetensors.index.json";
const PICKLES: [&str; 4] = [".bin", ".pt", ".pth", ".ckpt"];

impl Checkpoint {
    /// Opens the weights of a model folder.
    pub fn open(dir: &Path) -> Result<Checkpoint, SafetensorsError> {
        let in_dir = |e: SafetensorsError| e.in_file(dir);
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| {
                in_dir(SafetensorsError::new(format!(
                    "cannot list the folder: {e}"
                )))
            })?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        let index = names
            .iter()
            .any(|n| n == INDEX)
            .then(|| read_index(&dir.join(INDEX)))
            .transpose()?;
        let shards: Vec<String> = match &index {
            Some(map) => {
                let mut shards: Vec<String> = Vec::new();
                for f in map.values() {
                    if !shards.contains(f) {
                        shards.push(f.clone());
                    }
                }
                shards
            }
            None => {
                // The weights' own names where the folder has them (other
                // safetensors files, such as a fixture's reference dump, are
                // not weights), else every safetensors file.
                let all: Vec<String> = names
                    .iter()
                    .filter(|n| n.ends_with(".safetensors"))
                    .cloned()
                    .collect();
                let weights: Vec<String> =
                    all.iter().filter(|n| weights_file(n)).cloned().collect();
                if weights.is_empty() {
                    all
                } else {
                    weights
                }
            }
        };
        if shards.is_empty() {
            if let Some(p) = names
                .iter()
                .find(|n| PICKLES.iter().any(|s| n.ends_with(s)))
            {
                return Err(in_dir(SafetensorsError::new(format!(
                    "{p} is a pickled PyTorch checkpoint, which llm never unpickles (it can run code); \
                     convert the model to safetensors (transformers: save_pretrained(..., safe_serialization=True)) or to GGUF"
                ))));
            }
            return Err(in_dir(SafetensorsError::new(
                "no *.safetensors weights in this folder",
            )));
        }
        let mut files = Vec::with_capacity(shards.len());
        let mut by_name = HashMap::new();
        for (fi, shard) in shards.iter().enumerate() {
            let path = dir.join(shard);
            if !path.is_file() {
                return Err(SafetensorsError::new(format!(
                    "{INDEX} lists {shard}, which is not in the folder"
                ))
                .in_file(dir));
            }
            let f = SafetensorsFile::open(&path)?;
            for (ti, t) in f.header.tensors.iter().enumerate() {
                let slot = Slot {
                    file: fi,
                    tensor: ti,
                };
                if let Some(prev) = by_name.insert(t.name.clone(), slot) {
                    return Err(SafetensorsError::new(format!(
                        "tensor '{}' is in both {} and {shard}",
                        t.name, shards[prev.file]
                    ))
                    .in_file(dir));
                }
            }
            files.push(f);
        }
        for (tensor, shard) in index.iter().flatten() {
            let found = by_name.get(tensor).map(|s| &shards[s.file]);
            if found != Some(shard) {
                return Err(SafetensorsError::new(format!(
                    "{INDEX} puts tensor '{tensor}' in {shard}, but {}",
                    match found {
                        Some(other) => format!("it is in {other}"),
                        None => "no shard has it".to_string(),
                    }
                ))
                .in_file(dir));
            }
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            files,
            by_name,
        })
    }

    pub fn tensor(&self, name: &str) -> Option<(&TensorInfo, &[u8])> {
        let s = self.by_name.get(name)?;
        let f = &self.files[s.file];
        let t = &f.header.tensors[s.tensor];
        Some((t, f.data(t)))
    }

    /// A tensor that must be there with this dtype (quantised layers' parts).
    pub fn typed(&self, name: &str, dtype: Dtype) -> Result<(&TensorInfo, &[u8]), String> {
        let (t, d) = self
            .tensor(name)
            .ok_or_else(|| format!("tensor '{name}' is missing"))?;
        if t.dtype != dtype {
            return Err(format!(
                "tensor '{name}' is {}, not {}",
                t.dtype.name(),
                dtype.name()
            ));
        }
        Ok((t, d))
    }

    /// Every tensor, shard by shard in file order.
    pub fn tensors(&self) -> impl Iterator<Item = &TensorInfo> {
        self.files.iter().flat_map(|f| f.header.tensors.iter())
    }
}

/// `model.safetensors`, `output.safetensors` (EXL2) or a shard of either,
/// `model-00001-of-00003.safetensors`.
fn weights_file(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".safetensors") else {
        return false;
    };
    ["model", "output"].iter().any(|base| {
        stem == *base
            || stem
                .strip_prefix(base)
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|r| {
                    let parts: Vec<&str> = r.split("-of-").collect();
                    parts.len() == 2
                        && parts
                            .iter()
                            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                })
    })
}

/// An index's `weight_map` (tensor -> shard file), checked to be an object
/// of file names that stay in the folder.
fn read_index(index: &Path) -> Result<BTreeMap<String, String>, SafetensorsError> {
    let fail = |m: String| SafetensorsError::new(m).in_file(index);
    let text = std::fs::read(index).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let v: Value =
        serde_json::from_slice(&text).map_err(|e| fail(format!("not valid JSON: {e}")))?;
    let Some(map) = v.get("weight_map").and_then(Value::as_object) else {
        return Err(fail("no 'weight_map' object".to_string()));
    };
    let mut out = BTreeMap::new();
    for (tensor, file) in map {
        let Some(f) = file.as_str() else {
            return Err(fail(format!(
                "'weight_map' entry '{tensor}' is not a file name"
            )));
        };
        if f.contains('/') || f.contains('\\') || f.starts_with('.') {
            return Err(fail(format!(
                "'weight_map' entry '{tensor}' names {f:?}, outside the folder"
            )));
        }
        out.insert(tensor.clone(), f.to_string());
    }
    Ok(out)
}
