//! The conversation: a system prompt and the turns since, and how it is
//! saved to and loaded from JSON (`/save`, `/load`).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::chat::template::Message;
use crate::engine::sampler::SamplingParams;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Conversation {
    pub system: Option<String>,
    /// Alternating user and assistant messages, the user's first.
    pub messages: Vec<Message>,
}

impl Conversation {
    /// What the template sees: the system prompt (if any) and the turns.
    pub fn to_messages(&self) -> Vec<Message> {
        let system = self.system.iter().map(|s| Message {
            role: "system".into(),
            content: s.clone(),
        });
        system.chain(self.messages.iter().cloned()).collect()
    }

    pub fn push(&mut self, role: &str, content: impl Into<String>) {
        self.messages.push(Message {
            role: role.into(),
            content: content.into(),
        });
    }

    /// Drops the oldest exchange (a user message and the reply to it), never
    /// the last message. False when there is nothing older to drop.
    pub fn drop_oldest(&mut self) -> bool {
        if self.messages.len() <= 1 {
            return false;
        }
        let mut n = 1;
        while n < self.messages.len() - 1 && self.messages[n].role != "user" {
            n += 1;
        }
        self.messages.drain(..n);
        true
    }

    /// Drops the last exchange (`/undo`); false when there is none.
    pub fn undo(&mut self) -> bool {
        let Some(last_user) = self.messages.iter().rposition(|m| m.role == "user") else {
            return false;
        };
        self.messages.truncate(last_user);
        true
    }

    /// The last reply, taken off so it can be made again (`/regen`).
    pub fn take_last_reply(&mut self) -> Option<Message> {
        match self.messages.last() {
            Some(m) if m.role == "assistant" => self.messages.pop(),
            _ => None,
        }
    }
}

/// A conversation as `/save` writes it.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedChat {
    pub model: PathBuf,
    pub system: Option<String>,
    pub messages: Vec<Message>,
    pub sampling: SamplingParams,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_predict: Option<i64>,
}

impl SavedChat {
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        // Write beside, then rename: a failed save never leaves half a file.
        let tmp = path.with_extension("llm-tmp");
        std::fs::write(&tmp, json + "\n")
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                anyhow!("cannot save to {}: {e}", path.display())
            })
    }

    pub fn load(path: &Path) -> Result<SavedChat> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let saved: SavedChat = serde_json::from_str(&text)
            .map_err(|e| anyhow!("{} is not a saved chat: {e}", path.display()))?;
        // Turns alternate, the user's first: templates rely on it.
        for (i, m) in saved.messages.iter().enumerate() {
            let expected = if i % 2 == 0 { "user" } else { "assistant" };
            if m.role != expected {
                bail!(
                    "{}: message {} is '{}' where '{expected}' was expected (turns alternate, the user's first)",
                    path.display(),
                    i + 1,
                    m.role
                );
            }
        }
        if saved.messages.len() % 2 == 1 {
            bail!(
                "{}: the last message has no reply (a saved chat ends with the assistant's)",
                path.display()
            );
        }
        Ok(saved)
    }

    pub fn conversation(&self) -> Conversation {
        Conversation {
            system: self.system.clone(),
            messages: self.messages.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(roles: &[&str]) -> Conversation {
        let mut c = Conversation::default();
        for (i, r) in roles.iter().enumerate() {
            c.push(r, format!("m{i}"));
        }
        c
    }

    #[test]
    fn dropping_keeps_the_current_turn_and_the_system_prompt() {
        let mut c = conv(&["user", "assistant", "user", "assistant", "user"]);
        c.system = Some("sys".into());
        assert!(c.drop_oldest());
        assert_eq!(c.messages[0].content, "m2");
        assert!(c.drop_oldest());
        assert_eq!(c.messages.len(), 1);
        assert!(!c.drop_oldest());
        assert_eq!(c.to_messages()[0].role, "system");
    }

    #[test]
    fn undo_and_regen() {
        let mut c = conv(&["user", "assistant", "user", "assistant"]);
        assert_eq!(c.take_last_reply().unwrap().content, "m3");
        assert!(c.take_last_reply().is_none());
        assert!(c.undo());
        assert_eq!(c.messages.len(), 2);
        assert!(c.undo());
        assert!(!c.undo());
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.json");
        let saved = SavedChat {
            model: "m.gguf".into(),
            system: Some("be brief".into()),
            messages: conv(&["user", "assistant"]).messages,
            sampling: SamplingParams::default(),
            n_predict: None,
        };
        saved.save(&path).unwrap();
        let back = SavedChat::load(&path).unwrap();
        assert_eq!(back.conversation(), saved.conversation());
        let mut odd = SavedChat::load(&path).unwrap();
        odd.messages.swap(0, 1);
        odd.save(&path).unwrap();
        let err = SavedChat::load(&path).unwrap_err().to_string();
        assert!(err.contains("turns alternate"), "{err}");
        std::fs::write(&path, "{}").unwrap();
        let err = SavedChat::load(&path).unwrap_err().to_string();
        assert!(err.contains("is not a saved chat"), "{err}");
    }
}
