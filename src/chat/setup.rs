//! Getting ready to chat: which file a name means, which template to use and
//! where it came from, which catalogue family the model belongs to.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::chat::catalog::{model_dirs, Catalogue, Family, ModelIdentity};
use crate::chat::template::{ChatTemplate, Origin};
use crate::format::gguf::Metadata;

/// The model that `arg` names: a GGUF file or a Hugging Face folder (one
/// with a config.json), or an alias from models.toml (or a bare file name)
/// found in the model directories.
pub fn resolve_model(arg: &Path, catalogue: &Catalogue) -> Result<PathBuf> {
    if arg.is_dir() {
        if arg.join("config.json").is_file() {
            return Ok(arg.to_path_buf());
        }
        bail!(
            "{} is a directory, not a model file nor a Hugging Face model folder (it has no config.json): give the .gguf file inside it",
            arg.display()
        );
    }
    if arg.exists() {
        return Ok(arg.to_path_buf());
    }
    let is_file_name = arg
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    let bare = arg.components().count() == 1 && !is_file_name;
    if let (true, Some(name)) = (bare, arg.to_str()) {
        if let Some(found) = catalogue.find_model(name) {
            return Ok(found);
        }
        let dirs: Vec<String> = model_dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        bail!(
            "{name}: no such file, and no model by that name in {} (aliases are in models.toml)",
            if dirs.is_empty() {
                "$LLM_MODELS".to_string()
            } else {
                dirs.join(", ")
            }
        );
    }
    bail!("{}: no such file", arg.display())
}

/// What the user asked for on the command line.
#[derive(Default)]
pub struct TemplateChoice<'a> {
    pub name: Option<&'a str>,
    pub file: Option<&'a Path>,
}

/// The model's identity, from its metadata.
pub fn identity(md: &Metadata) -> Result<(String, Option<String>, Option<String>)> {
    let arch = md
        .str("general.architecture")?
        .unwrap_or_default()
        .to_string();
    let name = md.str("general.name")?.map(str::to_string);
    let template = md
        .str("tokenizer.chat_template")?
        .filter(|t| !t.trim().is_empty())
        .map(str::to_string);
    Ok((arch, name, template))
}

pub fn family_for<'c>(catalogue: &'c Catalogue, md: &Metadata) -> Result<Option<&'c Family>> {
    let (arch, name, template) = identity(md)?;
    Ok(catalogue.family_for(&ModelIdentity {
        architecture: &arch,
        name: name.as_deref(),
        template: template.as_deref(),
    }))
}

/// The template to chat with, in order: the user's file or name, the model's
/// own, its family's in models.toml, and a plain format. The second value
/// is a note for stderr when the choice is a guess.
pub fn choose_template(
    choice: &TemplateChoice,
    md: &Metadata,
    family: Option<&Family>,
) -> Result<(ChatTemplate, Option<String>)> {
    if let Some(file) = choice.file {
        return Ok((ChatTemplate::from_file(file)?, None));
    }
    if let Some(name) = choice.name {
        return match ChatTemplate::builtin(name) {
            Ok(t) => Ok((t, None)),
            Err(e) if Path::new(name).is_file() => {
                bail!("{e}; to use the file {name}, pass --chat-template-file {name}")
            }
            Err(e) => Err(e),
        };
    }
    let (_, _, own) = identity(md)?;
    if let Some(source) = own {
        // llama.cpp reads a template that is just "chatml" as that name.
        if source.trim() == "chatml" {
            return Ok((ChatTemplate::builtin("chatml")?, None));
        }
        let mut t = ChatTemplate::from_source("the model's template", Origin::Gguf, &source)?;
        t.name = "gguf".into();
        return Ok((t, None));
    }
    if let Some((family, name)) = family.and_then(|f| f.template.as_deref().map(|t| (f, t))) {
        let mut t = ChatTemplate::builtin(name)?;
        t.origin = Origin::Catalogue(family.name.clone());
        return Ok((t, None));
    }
    Ok((
        ChatTemplate::fallback(),
        Some(
            "llm: this model has no chat template and models.toml has none for it; using a plain 'User:/Assistant:' format (choose one with --chat-template NAME)"
                .to_string(),
        ),
    ))
}

/// Where a template came from, in words.
pub fn origin_text(t: &ChatTemplate) -> String {
    match &t.origin {
        Origin::Gguf => "the model file's tokenizer.chat_template".to_string(),
        Origin::BuiltIn => format!("built-in template '{}' (--chat-template)", t.name),
        Origin::File(p) => format!("file {}", p.display()),
        Origin::Catalogue(family) => {
            format!(
                "built-in template '{}', from models.toml family '{family}'",
                t.name
            )
        }
        Origin::Fallback => "fallback: plain format (the model has none)".to_string(),
    }
}
