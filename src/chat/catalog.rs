//! The model catalogue (`models.toml`): model families with their template,
//! stop strings and sampling defaults, and aliases that find model files.
//! The built-in file is embedded; the user's file adds to it and wins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use serde::Deserialize;

use crate::engine::sampler::SamplingOverrides;
#[cfg(test)]
use crate::engine::sampler::SamplingParams;

const BUILT_IN: &str = include_str!("../../models.toml");

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    #[serde(default)]
    pub aliases: BTreeMap<String, Vec<String>>,
    #[serde(default, rename = "family")]
    pub families: Vec<Family>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Family {
    pub name: String,
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub template_contains: Vec<String>,
    /// A built-in template for models that have none of their own.
    pub template: Option<String>,
    #[serde(default)]
    pub stop: Vec<String>,
    #[serde(default)]
    pub sampling: SamplingOverrides,
}

/// What a model says about itself, for matching it to a family.
pub struct ModelIdentity<'a> {
    pub architecture: &'a str,
    pub name: Option<&'a str>,
    pub template: Option<&'a str>,
}

impl Catalogue {
    /// The built-in catalogue with the user's file (if any) laid over it.
    pub fn load() -> Result<Catalogue> {
        let mut cat = Catalogue::parse(BUILT_IN, "built-in models.toml")?;
        if let Some(path) = user_file() {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let user = Catalogue::parse(&text, &path.display().to_string())?;
                    cat.merge(user);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // A HOME that is a file or a config directory we may not
                // enter says nothing about the model: chat goes on with the
                // built-in catalogue. A file that is there but wrong stays an
                // error above.
                Err(e) => eprintln!(
                    "llm: warning: cannot read {}: {e}; using the built-in catalogue",
                    path.display()
                ),
            }
        }
        Ok(cat)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Catalogue> {
        let cat: Catalogue = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let at = line.map_or(String::new(), |l| format!(" (line {l})"));
            anyhow!("{origin}{at}: {}", e.message().trim())
        })?;
        for f in &cat.families {
            f.sampling
                .check()
                .map_err(|e| anyhow!("{origin}: family '{}': [family.sampling] {e}", f.name))?;
        }
        Ok(cat)
    }

    /// `user` wins: its families replace same-named ones and are tried first.
    pub fn merge(&mut self, user: Catalogue) {
        self.aliases.extend(user.aliases);
        self.families
            .retain(|f| !user.families.iter().any(|u| u.name == f.name));
        let mut families = user.families;
        families.append(&mut self.families);
        self.families = families;
    }

    pub fn family_for(&self, id: &ModelIdentity) -> Option<&Family> {
        let name = id.name.map(str::to_lowercase);
        self.families.iter().find(|f| {
            f.architectures.iter().any(|a| a == id.architecture)
                || name
                    .as_deref()
                    .is_some_and(|n| f.names.iter().any(|s| n.contains(&s.to_lowercase())))
                || id
                    .template
                    .is_some_and(|t| f.template_contains.iter().any(|s| t.contains(s.as_str())))
        })
    }

    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// The model file an alias (or a bare file name) stands for, from the
    /// model directories; None when nothing matches.
    pub fn find_model(&self, name: &str) -> Option<PathBuf> {
        let dirs = model_dirs();
        let patterns: Vec<String> = match self.aliases.get(&name.to_lowercase()) {
            Some(p) => p.clone(),
            None => vec![name.to_string(), format!("{name}.gguf")],
        };
        for pattern in &patterns {
            for dir in &dirs {
                let Ok(entries) = std::fs::read_dir(dir) else {
                    continue;
                };
                let mut hits: Vec<PathBuf> = entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_file())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| glob_match(pattern, n))
                    })
                    .collect();
                hits.sort();
                if let Some(hit) = hits.into_iter().next() {
                    return Some(hit);
                }
            }
        }
        None
    }
}

/// ~/.config/llm/models.toml, or under $XDG_CONFIG_HOME.
pub fn user_file() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))?;
    Some(config.join("llm/models.toml"))
}

/// Where aliases look: $LLM_MODELS (colon-separated), then the cache that
/// scripts/fetch-models.sh fills.
pub fn model_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("LLM_MODELS")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    if let Some(d) = std::env::var_os("LLM_TEST_MODELS") {
        dirs.push(PathBuf::from(d));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")));
    if let Some(cache) = cache {
        dirs.push(cache.join("llm/test-models"));
    }
    dirs
}

/// Shell-style `*` and `?`, ignoring ASCII case.
fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let n: Vec<char> = name.to_lowercase().chars().collect();
    // Iterative matching with one backtrack point for the last `*`.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_catalogue_parses_and_names_real_templates() {
        let cat = Catalogue::parse(BUILT_IN, "built-in").unwrap();
        assert!(cat.families.len() >= 5);
        for f in &cat.families {
            if let Some(t) = &f.template {
                crate::chat::template::ChatTemplate::builtin(t)
                    .unwrap_or_else(|e| panic!("family {}: {e}", f.name));
            }
        }
    }

    #[test]
    fn families_match_by_architecture_name_or_template() {
        let cat = Catalogue::parse(BUILT_IN, "built-in").unwrap();
        let by_arch = ModelIdentity {
            architecture: "gemma3",
            name: Some("Gemma 3 270m"),
            template: None,
        };
        assert_eq!(cat.family_for(&by_arch).unwrap().name, "gemma3");
        let by_name = ModelIdentity {
            architecture: "llama",
            name: Some("SmolLM2 135M Instruct"),
            template: None,
        };
        assert_eq!(cat.family_for(&by_name).unwrap().name, "smollm2");
        let by_template = ModelIdentity {
            architecture: "llama",
            name: None,
            template: Some("{{ '<|start_header_id|>' }}"),
        };
        assert_eq!(cat.family_for(&by_template).unwrap().name, "llama3");
        let none = ModelIdentity {
            architecture: "llama",
            name: Some("tiny"),
            template: None,
        };
        assert!(cat.family_for(&none).is_none());
    }

    #[test]
    fn user_file_overrides_and_adds() {
        let mut cat = Catalogue::parse(BUILT_IN, "built-in").unwrap();
        let user = Catalogue::parse(
            "[aliases]\nsmollm2 = [\"mine.gguf\"]\n\n[[family]]\nname = \"gemma3\"\narchitectures = [\"gemma3\"]\ntemplate = \"chatml\"\n\n[[family]]\nname = \"tiny\"\nnames = [\"tiny\"]\n[family.sampling]\ntemp = 0.1\n",
            "user",
        )
        .unwrap();
        cat.merge(user);
        assert_eq!(cat.aliases["smollm2"], ["mine.gguf"]);
        assert_eq!(
            cat.family("gemma3").unwrap().template.as_deref(),
            Some("chatml")
        );
        assert_eq!(
            cat.families.iter().filter(|f| f.name == "gemma3").count(),
            1
        );
        let tiny = ModelIdentity {
            architecture: "llama",
            name: Some("Tiny model"),
            template: None,
        };
        let f = cat.family_for(&tiny).unwrap();
        assert_eq!(f.sampling.over(SamplingParams::default()).temp, 0.1);
    }

    #[test]
    fn bad_files_say_where() {
        let err = Catalogue::parse("[[family]]\nname = \"x\"\ntemperature = 1\n", "u.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("u.toml (line 3)"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn globs() {
        assert!(glob_match(
            "SmolLM2*.gguf",
            "smollm2-135m-instruct.q4_1.gguf"
        ));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("*x*y", "axxby"));
        assert!(!glob_match("*.gguf", "model.bin"));
        assert!(!glob_match("a*b", "acbd"));
    }
}
