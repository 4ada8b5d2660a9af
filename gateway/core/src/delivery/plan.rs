//! What goes out on a channel, decided before the plugin renders it: the
//! channel's reply window (a template outside it, or another channel), and
//! content the channel cannot take degraded (choices as numbered text) —
//! never a send the channel is known to refuse.

use std::collections::BTreeMap;

use crate::channel::{Capability, Manifest, OutboundContent, Purpose};
use crate::config::TemplateRef;

/// The decision for one outbound message on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Render and send this content.
    Send(OutboundContent),
    /// Not on this channel: try the customer's next one, or the hand-off
    /// inbox, with this reason.
    Elsewhere(String),
}

/// What [`plan`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    /// The configured channel name.
    pub channel: &'a str,
    /// Its plugin's manifest.
    pub manifest: &'a Manifest,
    /// `[channels.NAME.templates]`.
    pub templates: &'a BTreeMap<String, TemplateRef>,
    /// Why it is sent.
    pub purpose: Purpose,
    /// The customer's last message on the channel, Unix seconds.
    pub last_inbound_at: Option<u64>,
    /// Now, Unix seconds.
    pub now: u64,
}

/// Decides what `content` becomes on the channel of `s`.
pub fn plan(s: &Situation<'_>, content: &OutboundContent) -> Plan {
    let mut content = content.clone();
    let window = match s.purpose {
        Purpose::PersonReply => s
            .manifest
            .person_reply_window_seconds
            .or(s.manifest.reply_window_seconds),
        _ => s.manifest.reply_window_seconds,
    };
    if let Some(window) = window
        && !matches!(content, OutboundContent::Template { .. })
    {
        let inside = s
            .last_inbound_at
            .is_some_and(|t| s.now.saturating_sub(t) < u64::from(window));
        if !inside {
            let when = match s.last_inbound_at {
                Some(t) => format!(
                    "the customer last wrote {} hours ago",
                    s.now.saturating_sub(t) / 3600
                ),
                None => "the customer never wrote there".to_string(),
            };
            let purpose = s.purpose.as_str();
            match s.templates.get(purpose) {
                Some(t) if s.manifest.can(Capability::SendTemplates) => {
                    content = OutboundContent::Template {
                        name: t.name.clone(),
                        language: t.language.clone(),
                        parameters: t.parameters.clone(),
                    };
                }
                Some(_) => {
                    return Plan::Elsewhere(format!(
                        "{}: outside its {}-hour reply window ({when}), and its plugin sends no templates",
                        s.channel,
                        window / 3600
                    ));
                }
                None => {
                    return Plan::Elsewhere(format!(
                        "{}: outside its {}-hour reply window ({when}), and no template is configured for {purpose} ([channels.{}.templates] {purpose})",
                        s.channel,
                        window / 3600,
                        s.channel
                    ));
                }
            }
        }
    }
    match fit(s.manifest, content) {
        Ok(c) => Plan::Send(c),
        Err(why) => Plan::Elsewhere(format!("{}: {why}", s.channel)),
    }
}

/// Keeps `content` within what the channel declares it takes, degrading
/// what it cannot: choices become numbered text where the channel has none
/// (or fewer, or shorter titles), media its caption and link where it sends
/// none. A template to a channel without templates cannot be degraded.
pub fn fit(m: &Manifest, content: OutboundContent) -> Result<OutboundContent, String> {
    let limits = &m.outbound_limits;
    let fits_text = |t: &str| t.chars().count() <= limits.max_text_chars as usize;
    let as_text = |c: &OutboundContent| {
        let t = c.as_text();
        if !m.can(Capability::SendText) {
            Err(format!(
                "it sends no text (its manifest does not declare send-text), so not this {}",
                c.kind()
            ))
        } else if t.trim().is_empty() {
            Err(format!(
                "it takes no {} and the message has no text",
                c.kind()
            ))
        } else if !fits_text(&t) {
            Err(format!(
                "the text is {} characters; it takes at most {}",
                t.chars().count(),
                limits.max_text_chars
            ))
        } else {
            Ok(OutboundContent::text(t))
        }
    };
    match &content {
        OutboundContent::Text { .. } => as_text(&content),
        OutboundContent::Choices { prompt, options } => {
            let native = m.can(Capability::SendChoices)
                && !options.is_empty()
                && options.len() <= limits.max_choices as usize
                && options
                    .iter()
                    .all(|o| o.title.chars().count() <= limits.max_choice_title_chars as usize)
                && fits_text(prompt);
            if native {
                Ok(content)
            } else {
                as_text(&content)
            }
        }
        OutboundContent::Media { caption, .. } => {
            let caption_fits = caption
                .as_deref()
                .is_none_or(|c| c.chars().count() <= limits.max_caption_chars as usize);
            if m.can(Capability::SendMedia) && caption_fits {
                Ok(content)
            } else {
                as_text(&content)
            }
        }
        OutboundContent::Template { name, .. } => {
            if m.can(Capability::SendTemplates) {
                Ok(content)
            } else {
                Err(format!("it sends no templates (template `{name}`)"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{Choice, Handshake, OutboundLimits, Verification};

    fn manifest(caps: Vec<Capability>, window: Option<u32>) -> Manifest {
        Manifest {
            id: "whatsapp".into(),
            version: "1".into(),
            display_name: String::new(),
            verification: Verification::None,
            handshake: Handshake::None,
            secrets: vec![],
            settings: vec![],
            capabilities: caps,
            reply_window_seconds: window,
            person_reply_window_seconds: None,
            deep_links: vec![],
            outbound_limits: OutboundLimits {
                max_text_chars: 4096,
                max_choices: 3,
                max_choice_title_chars: 20,
                max_caption_chars: 1024,
            },
        }
    }

    fn choices(n: usize) -> OutboundContent {
        OutboundContent::Choices {
            prompt: "Pick one".into(),
            options: (1..=n)
                .map(|i| Choice {
                    id: format!("c{i}"),
                    title: format!("Option {i}"),
                })
                .collect(),
        }
    }

    fn situation<'a>(
        m: &'a Manifest,
        t: &'a BTreeMap<String, TemplateRef>,
        purpose: Purpose,
        last: Option<u64>,
    ) -> Situation<'a> {
        Situation {
            channel: "whatsapp",
            manifest: m,
            templates: t,
            purpose,
            last_inbound_at: last,
            now: 1_000_000,
        }
    }

    #[test]
    fn choices_go_native_within_the_limits_and_numbered_beyond_them() {
        let m = manifest(vec![Capability::SendText, Capability::SendChoices], None);
        assert_eq!(fit(&m, choices(3)), Ok(choices(3)));
        assert_eq!(
            fit(&m, choices(4)),
            Ok(OutboundContent::text(
                "Pick one\n1. Option 1\n2. Option 2\n3. Option 3\n4. Option 4"
            ))
        );
        let text_only = manifest(vec![Capability::SendText], None);
        assert_eq!(
            fit(&text_only, choices(1)),
            Ok(OutboundContent::text("Pick one\n1. Option 1"))
        );
    }

    #[test]
    fn a_channel_that_sends_no_text_gets_none() {
        assert_eq!(
            fit(&manifest(vec![], None), OutboundContent::text("hi")),
            Err(
                "it sends no text (its manifest does not declare send-text), so not this text"
                    .into()
            )
        );
    }

    #[test]
    fn a_template_cannot_be_degraded() {
        let t = OutboundContent::Template {
            name: "cart".into(),
            language: "en".into(),
            parameters: vec![],
        };
        assert_eq!(
            fit(&manifest(vec![], None), t),
            Err("it sends no templates (template `cart`)".into())
        );
    }

    #[test]
    fn outside_the_window_a_proactive_message_becomes_its_template() {
        let m = manifest(
            vec![Capability::SendText, Capability::SendTemplates],
            Some(86_400),
        );
        let mut t = BTreeMap::new();
        t.insert(
            "proactive".to_string(),
            TemplateRef {
                name: "cart_reminder".into(),
                language: "en_US".into(),
                parameters: vec!["x".into()],
            },
        );
        let hello = OutboundContent::text("hello");
        let thirty_hours_ago = Some(1_000_000 - 30 * 3600);
        assert_eq!(
            plan(
                &situation(&m, &t, Purpose::Proactive, thirty_hours_ago),
                &hello
            ),
            Plan::Send(OutboundContent::Template {
                name: "cart_reminder".into(),
                language: "en_US".into(),
                parameters: vec!["x".into()]
            })
        );
        // Within the window: as written.
        let an_hour_ago = Some(1_000_000 - 3600);
        assert_eq!(
            plan(&situation(&m, &t, Purpose::Proactive, an_hour_ago), &hello),
            Plan::Send(hello.clone())
        );
        // No template for a person's reply: elsewhere, with the reason.
        let Plan::Elsewhere(why) = plan(
            &situation(&m, &t, Purpose::PersonReply, thirty_hours_ago),
            &hello,
        ) else {
            panic!()
        };
        assert_eq!(
            why,
            "whatsapp: outside its 24-hour reply window (the customer last wrote 30 hours ago), and no template is configured for person-reply ([channels.whatsapp.templates] person-reply)"
        );
        // A channel that takes a person's reply longer (Messenger's
        // HUMAN_AGENT tag) lets it through as written; a proactive one not.
        let mut messenger = manifest(vec![Capability::SendText], Some(86_400));
        messenger.person_reply_window_seconds = Some(7 * 86_400);
        let none = BTreeMap::new();
        assert_eq!(
            plan(
                &situation(&messenger, &none, Purpose::PersonReply, thirty_hours_ago),
                &hello
            ),
            Plan::Send(hello.clone())
        );
        assert!(matches!(
            plan(
                &situation(&messenger, &none, Purpose::Proactive, thirty_hours_ago),
                &hello
            ),
            Plan::Elsewhere(_)
        ));
    }
}
