//! Subscription handshakes a plugin manifest can declare, answered by the
//! host on the plugin's behalf.

use super::{SecretMatcher, query_param};
use crate::channel::Handshake;

/// What to do with a request, as far as the handshake is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not a handshake request: verify and parse it as usual.
    NotHandshake,
    /// A handshake with the right token: answer 200 with this body.
    Accept(String),
    /// A handshake with a wrong or missing token: answer 403, echo nothing.
    Reject,
}

/// A channel's handshake, ready to apply.
#[derive(Debug)]
pub struct Responder {
    handshake: Handshake,
    token: Option<SecretMatcher>,
}

impl Responder {
    /// Prepares `handshake` with the secret it names (`None` when the
    /// configuration lacks it: every handshake is then rejected).
    pub fn new<'a>(
        handshake: &Handshake,
        secret: impl Fn(&str) -> Option<&'a str>,
        random_key: &[u8; 32],
    ) -> Self {
        let token = match handshake {
            Handshake::None => None,
            Handshake::QueryChallenge { token_secret, .. } => {
                secret(token_secret).map(|s| SecretMatcher::new(s.as_bytes(), random_key))
            }
        };
        Responder {
            handshake: handshake.clone(),
            token,
        }
    }

    /// Applies the handshake to a request's method and raw query.
    pub fn respond(&self, method: &str, query: &str) -> Outcome {
        let Handshake::QueryChallenge {
            method: hs_method,
            mode_param,
            mode_value,
            token_param,
            challenge_param,
            ..
        } = &self.handshake
        else {
            return Outcome::NotHandshake;
        };
        if !method.eq_ignore_ascii_case(hs_method) {
            return Outcome::NotHandshake;
        }
        if query_param(query, mode_param).as_deref() != Some(mode_value.as_str()) {
            return if method.eq_ignore_ascii_case("GET") {
                Outcome::Reject
            } else {
                Outcome::NotHandshake
            };
        }
        let (Some(token), Some(challenge), Some(matcher)) = (
            query_param(query, token_param),
            query_param(query, challenge_param),
            &self.token,
        ) else {
            return Outcome::Reject;
        };
        if matcher.matches(token.as_bytes()) {
            Outcome::Accept(challenge)
        } else {
            Outcome::Reject
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whatsapp() -> Responder {
        let hs = Handshake::QueryChallenge {
            method: "GET".into(),
            mode_param: "hub.mode".into(),
            mode_value: "subscribe".into(),
            token_param: "hub.verify_token".into(),
            token_secret: "verify_token".into(),
            challenge_param: "hub.challenge".into(),
        };
        Responder::new(
            &hs,
            |n| (n == "verify_token").then_some("meatyhamhock"),
            &[1; 32],
        )
    }

    #[test]
    fn the_right_token_echoes_the_challenge_unchanged() {
        let out = whatsapp().respond(
            "GET",
            "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock",
        );
        assert_eq!(out, Outcome::Accept("1158201444".into()));
    }

    #[test]
    fn a_wrong_or_missing_token_is_rejected_without_echo() {
        let r = whatsapp();
        assert_eq!(
            r.respond(
                "GET",
                "hub.mode=subscribe&hub.challenge=1&hub.verify_token=nope"
            ),
            Outcome::Reject
        );
        assert_eq!(
            r.respond("GET", "hub.mode=subscribe&hub.challenge=1"),
            Outcome::Reject
        );
        assert_eq!(r.respond("GET", ""), Outcome::Reject);
    }

    #[test]
    fn a_post_is_not_a_handshake() {
        assert_eq!(whatsapp().respond("POST", ""), Outcome::NotHandshake);
    }

    #[test]
    fn an_unconfigured_token_rejects_every_handshake() {
        let hs = whatsapp().handshake.clone();
        let r = Responder::new(&hs, |_| None, &[1; 32]);
        assert_eq!(
            r.respond(
                "GET",
                "hub.mode=subscribe&hub.challenge=1&hub.verify_token="
            ),
            Outcome::Reject
        );
    }
}
