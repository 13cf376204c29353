//! A GGUF model on disk: one file or every part of a split model, memory-mapped,
//! with zero-copy views of tensor data.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::error::GgufError;
use super::header::{parse, parse_truncated, Header, Metadata, Missing, TensorInfo};
use super::value::Value;

/// One mapped file of a model.
pub struct Part {
    pub path: PathBuf,
    pub len: u64,
    pub version: u32,
    pub alignment: u64,
    pub data_offset: u64,
    map: Option<Mmap>,
}

/// A model's header and tensors, over one or more mapped files.
pub struct GgufFile {
    parts: Vec<Part>,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
}

/// A tensor's description and its bytes, borrowed from the mapping.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub info: &'a TensorInfo,
    pub data: &'a [u8],
}

const SPLIT_COUNT: &str = "split.count";
const SPLIT_NO: &str = "split.no";
const SPLIT_TENSORS: &str = "split.tensors.count";

impl GgufFile {
    /// Opens a model. A path named like `name-00001-of-00003.gguf` opens every
    /// part of the split model into one tensor namespace.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let split = split_name(path);
        let (first, first_header) = map_part(path)?;
        let count = split_count(&first_header.metadata, path)?;
        let Some((prefix, name_count)) = split else {
            if count > 1 {
                let no = split_no(&first_header.metadata, path)?;
                return Err(GgufError::new(format!(
                    "this is part {} of a {count}-part split model, but its name does not end in \
                     -NNNNN-of-NNNNN.gguf, so the other parts cannot be found",
                    no + 1
                ))
                .in_file(path));
            }
            return GgufFile::from_parts(vec![(first, first_header)]);
        };
        if count != 1 && count != name_count {
            return Err(GgufError::new(format!(
                "the name says {name_count} parts but metadata '{SPLIT_COUNT}' says {count}"
            ))
            .in_file(path));
        }
        let mut first = Some((first, first_header));
        let mut parts = Vec::with_capacity(name_count as usize);
        for no in 0..name_count {
            let part_path =
                PathBuf::from(format!("{prefix}-{:05}-of-{name_count:05}.gguf", no + 1));
            let (part, header) = match first.take_if(|_| part_path == path) {
                Some(opened) => opened,
                None if part_path.exists() => map_part(&part_path)?,
                None => {
                    return Err(GgufError::new(format!(
                        "part {} of this {name_count}-part split model is missing: {}",
                        no + 1,
                        part_path.display()
                    ))
                    .in_file(path))
                }
            };
            let found_no = split_no(&header.metadata, &part_path)?;
            if found_no != no {
                return Err(GgufError::new(format!(
                    "metadata '{SPLIT_NO}' is {found_no}, but the name makes it part {}",
                    no + 1
                ))
                .in_file(&part_path));
            }
            parts.push((part, header));
        }
        GgufFile::from_parts(parts)
    }

    fn from_parts(parts: Vec<(Part, Header)>) -> Result<GgufFile, GgufError> {
        let mut metadata = None;
        let mut tensors = Vec::new();
        let mut by_name = HashMap::new();
        let mut mapped = Vec::with_capacity(parts.len());
        for (index, (part, header)) in parts.into_iter().enumerate() {
            for mut t in header.tensors {
                t.part = index;
                if by_name.insert(t.name.clone(), tensors.len()).is_some() {
                    return Err(GgufError::new(format!(
                        "tensor '{}' appears in more than one part of the split model",
                        t.name
                    ))
                    .in_file(&part.path));
                }
                tensors.push(t);
            }
            metadata.get_or_insert(header.metadata);
            mapped.push(part);
        }
        let metadata = metadata.unwrap_or_default();
        if mapped.len() > 1 {
            if let Some(expected) = metadata.get(SPLIT_TENSORS).and_then(Value::as_u64) {
                if expected != tensors.len() as u64 {
                    return Err(GgufError::new(format!(
                        "metadata '{SPLIT_TENSORS}' says {expected} tensors but the parts hold {}",
                        tensors.len()
                    ))
                    .in_file(&mapped[0].path));
                }
            }
        }
        Ok(GgufFile {
            parts: mapped,
            metadata,
            tensors,
            by_name,
        })
    }

    /// Opens a single-file model whose header is whole but whose tensor
    /// data may be cut short (a truncated download), for `llm info`: the
    /// tensors past the end are described but have no bytes (their data
    /// reads as empty). The second value says what is missing.
    pub fn open_truncated(path: &Path) -> Result<(GgufFile, Option<Missing>), GgufError> {
        let (len, map) = open_map(path)?;
        let (header, missing) =
            parse_truncated(map.as_deref().unwrap_or(&[])).map_err(|e| e.in_file(path))?;
        let part = Part::new(path, len, &header, map);
        Ok((GgufFile::from_parts(vec![(part, header)])?, missing))
    }

    /// The files of the model; one unless it is split.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    pub fn path(&self) -> &Path {
        &self.parts[0].path
    }

    pub fn version(&self) -> u32 {
        self.parts[0].version
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// A tensor and its bytes, straight from the mapping.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        let info = self.tensor_info(name)?;
        Some(TensorView {
            info,
            data: self.tensor_data(info),
        })
    }

    /// The bytes of a tensor of this model (bounds were checked at open).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        match &self.parts[info.part].map {
            // Empty past the end: only a file opened with `open_truncated`
            // has such tensors.
            Some(map) => map
                .get(info.offset as usize..(info.offset + info.size) as usize)
                .unwrap_or(&[]),
            None => &[],
        }
    }
}

/// Only the metadata of a GGUF file (its first part, for a split model),
/// without looking at tensors: enough for its vocabulary and chat template,
/// even when the tensor data is missing or cut short.
pub fn read_metadata(path: &Path) -> Result<Metadata, GgufError> {
    let (_, map) = open_map(path)?;
    let (_, metadata) = super::header::parse_metadata(map.as_deref().unwrap_or(&[]))
        .map_err(|e| e.in_file(path))?;
    Ok(metadata)
}

/// Opens and maps a model file (`None` for an empty file, which cannot be mapped).
fn open_map(path: &Path) -> Result<(u64, Option<Mmap>), GgufError> {
    let err = |msg: String| GgufError::new(msg).in_file(path);
    // Looked at before opening: opening a FIFO would wait for a writer.
    let meta = std::fs::metadata(path).map_err(|e| err(describe_io(&e)))?;
    if meta.is_dir() {
        return Err(err("is a directory, not a model file".into()));
    }
    if !meta.is_file() {
        return Err(err("is not a regular file".into()));
    }
    // Without blocking, in case it was swapped for a FIFO since.
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| err(describe_io(&e)))?
    };
    let meta = file.metadata().map_err(|e| err(describe_io(&e)))?;
    if meta.is_dir() {
        return Err(err("is a directory, not a model file".into()));
    }
    if !meta.is_file() {
        return Err(err("is not a regular file".into()));
    }
    let len = meta.len();
    // An empty file cannot be mapped; parse() explains what is wrong with it.
    let map = if len == 0 {
        None
    } else {
        // SAFETY: the mapping is read-only. Another process truncating the
        // file while we hold it would fault, as it would for llama.cpp; model
        // files are not edited in place.
        Some(unsafe { Mmap::map(&file) }.map_err(|e| err(format!("cannot map the file: {e}")))?)
    };
    Ok((len, map))
}

/// Maps a file and parses its header.
impl Part {
    fn new(path: &Path, len: u64, header: &Header, map: Option<Mmap>) -> Part {
        Part {
            path: path.to_path_buf(),
            len,
            version: header.version,
            alignment: header.alignment,
            data_offset: header.data_offset,
            map,
        }
    }
}

fn map_part(path: &Path) -> Result<(Part, Header), GgufError> {
    let (len, map) = open_map(path)?;
    let header = parse(map.as_deref().unwrap_or(&[])).map_err(|e| e.in_file(path))?;
    let part = Part::new(path, len, &header, map);
    Ok((part, header))
}

fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// `dir/name-00002-of-00003.gguf` -> (`dir/name`, 3).
fn split_name(path: &Path) -> Option<(String, u64)> {
    let s = path.to_str()?;
    let stem = s.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, no) = rest.rsplit_once('-')?;
    let digits = |x: &str| x.len() == 5 && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(count) || !digits(no) {
        return None;
    }
    let count: u64 = count.parse().ok()?;
    let no: u64 = no.parse().ok()?;
    (count >= 1 && no >= 1 && no <= count).then(|| (prefix.to_string(), count))
}

fn split_count(metadata: &Metadata, path: &Path) -> Result<u64, GgufError> {
    match metadata.get(SPLIT_COUNT) {
        None => Ok(1),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=99_999).contains(n))
            .ok_or_else(|| {
                GgufError::new(format!(
                    "metadata '{SPLIT_COUNT}' should be a count from 1 to 99999, found {} {:?}",
                    v.type_description(),
                    v
                ))
                .in_file(path)
            }),
    }
}

fn split_no(metadata: &Metadata, path: &Path) -> Result<u64, GgufError> {
    match metadata.get(SPLIT_NO) {
        None => Ok(0),
        Some(v) => v.as_u64().ok_or_else(|| {
            GgufError::new(format!(
                "metadata '{SPLIT_NO}' should be an integer, found {}",
                v.type_description()
            ))
            .in_file(path)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names() {
        assert_eq!(
            split_name(Path::new("a/m-00002-of-00003.gguf")),
            Some(("a/m".into(), 3))
        );
        assert_eq!(split_name(Path::new("m-00004-of-00003.gguf")), None);
        assert_eq!(split_name(Path::new("m-0001-of-0003.gguf")), None);
        assert_eq!(split_name(Path::new("m.gguf")), None);
    }
}
