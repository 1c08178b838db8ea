//! The repository authenticates; pgssl relays the exchange one message at a time until
//! AuthenticationOk (or the repository's refusal), offering the client only what it can use through
//! a TLS terminator.
//!
//! The exchange alternates strictly: each AuthenticationXXX request that expects an answer
//! (cleartext, MD5, SASL, SASLContinue, GSS) is followed by exactly one client message, every frame is
//! length-checked before anything is allocated for it, and the whole phase runs under one deadline,
//! so a client that stalls mid-exchange cannot hold the session.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::{FrameError, write_frame};
use crate::proxy::protocol::auth_message::{
    self, AUTH_OK, AUTH_SASL, AUTH_SASL_FINAL, AuthMessageError, Frame,
};
use crate::proxy::protocol::error_response::error_fields;
use crate::proxy::protocol::login_watch::LoginOutcome;

/// How the authentication phase ended.
#[derive(Debug)]
pub enum AuthEnd {
    /// AuthenticationOk was relayed: the session's start-up goes on in the byte relay.
    Authenticated,
    /// The repository refused the login with this ErrorResponse, which was relayed.
    Refused(LoginOutcome),
    /// The repository's first answer was an ErrorResponse saying its host cannot take sessions now
    /// ([`LoginOutcome::host_unavailable`]). Nothing was relayed: the session may go to another host,
    /// or the frame to the client.
    Unavailable(Frame),
    /// The repository or the client sent a message the exchange does not expect; it was relayed and
    /// the byte relay takes over from here.
    Handover,
    /// The repository offered only channel binding, which cannot work through pgssl.
    OnlyChannelBinding,
    /// A frame was malformed or too large.
    Malformed(AuthMessageError),
    /// The deadline passed before the exchange finished.
    TimedOut,
    /// `auth.mode = "proxy"` without a verifier source: nothing was tried.
    NoLookupUser,
    /// A socket failed or a side closed.
    Io(std::io::Error),
    /// The failed-login limit judged the repository's verdict: the (address, role) pair was locked
    /// out by the time it came, so it was not relayed. Retry after this long.
    LockedOut(std::time::Duration),
}

/// What the repository decided, shown to the failed-login limit before it is relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The server's last SASL message or AuthenticationOk: the client is in.
    Accepted,
    /// The login was refused after the client answered a credential request: 28P01, or the 28000 of
    /// an LDAP, PAM or RADIUS failure (a guess like any other).
    WrongPassword,
}

/// The cure for the one refusal pgssl itself causes in passthrough: it withholds the
/// SCRAM-SHA-256-PLUS offer (channel binding cannot pass through a TLS terminator), so a client that
/// could bind says so (`y`), and a repository reached over TLS, which did offer PLUS, takes that
/// for a downgrade: `FATAL 28000 SCRAM channel binding negotiation error`. Its words name no cure.
pub const CHANNEL_BINDING_HINT: &str = "pgssl relays this login to the repository over TLS and cannot pass channel binding through: let pgssl authenticate clients itself ('pgssl authentication lookup-user set', then 'pgssl pending-changes apply'), or connect with channel_binding=disable";

/// `frame` with [`CHANNEL_BINDING_HINT`] added when it is the repository's channel-binding refusal
/// (and has no hint of its own); any other frame as it is.
fn with_channel_binding_hint(frame: Frame) -> Frame {
    let LoginOutcome::Refused { message, .. } = LoginOutcome::refused(&frame.body) else {
        return frame;
    };
    let has_hint = error_fields(&frame.body).any(|(code, _)| code == b'H');
    // PostgreSQL says it with 28000 (08P01 in some versions): the words are what is stable.
    if !message.contains("channel binding negotiation") || has_hint {
        return frame;
    }
    let Some(fields) = frame.body.strip_suffix(&[0]) else {
        return frame;
    };
    let mut body = Vec::with_capacity(frame.body.len() + CHANNEL_BINDING_HINT.len() + 3);
    body.extend_from_slice(fields);
    body.push(b'H');
    body.extend_from_slice(CHANNEL_BINDING_HINT.as_bytes());
    body.extend_from_slice(&[0, 0]);
    Frame {
        kind: frame.kind,
        body: body.into(),
    }
}

/// Judges a verdict before it is relayed: `Err(wait)` withholds it and ends the exchange as
/// [`AuthEnd::LockedOut`].
pub type Gate<'a> = &'a mut (dyn FnMut(Verdict) -> Result<(), std::time::Duration> + Send);

/// Relays the authentication exchange between `client` and `upstream` until it is decided, within
/// `deadline`.
pub async fn passthrough<C, U>(client: &mut C, upstream: &mut U, deadline: Instant) -> AuthEnd
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    passthrough_gated(client, upstream, deadline, &mut |_| Ok(())).await
}

/// [`passthrough`], with the repository's verdict shown to `gate` before it is relayed.
pub async fn passthrough_gated<C, U>(
    client: &mut C,
    upstream: &mut U,
    deadline: Instant,
    gate: Gate<'_>,
) -> AuthEnd
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    match tokio::time::timeout_at(deadline, exchange(client, upstream, gate)).await {
        Ok(end) => end,
        Err(_) => AuthEnd::TimedOut,
    }
}

async fn exchange<C, U>(client: &mut C, upstream: &mut U, gate: Gate<'_>) -> AuthEnd
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    // Whether the client has answered a request: a refusal after that judged its credential.
    let mut answered = false;
    // Whether the client has seen anything of this repository session yet.
    let mut relayed_any = false;
    loop {
        let request = match read_frame(upstream).await {
            Ok(f) => f,
            Err(e) => return e,
        };
        if !relayed_any
            && request.kind == b'E'
            && LoginOutcome::refused(&request.body).host_unavailable()
        {
            return AuthEnd::Unavailable(request);
        }
        relayed_any = true;
        let code = request.auth_code();
        let relayed = match code {
            Some(AUTH_SASL) => match auth_message::without_channel_binding(&request) {
                Ok(Some(offer)) => offer,
                Ok(None) => return AuthEnd::OnlyChannelBinding,
                Err(e) => return AuthEnd::Malformed(e),
            },
            _ => request,
        };
        let verdict = match code {
            Some(AUTH_OK | AUTH_SASL_FINAL) => Some(Verdict::Accepted),
            None if relayed.kind == b'E'
                && matches!(LoginOutcome::refused(&relayed.body), LoginOutcome::Refused { sqlstate, message }
                    if sqlstate == "28P01"
                        // Not the channel-binding refusal pgssl itself causes: that is no guess.
                        || (answered && sqlstate == "28000" && !message.contains("channel binding"))) =>
            {
                Some(Verdict::WrongPassword)
            }
            _ => None,
        };
        if let Some(Err(wait)) = verdict.map(&mut *gate) {
            return AuthEnd::LockedOut(wait);
        }
        let relayed = match code {
            None if relayed.kind == b'E' => with_channel_binding_hint(relayed),
            _ => relayed,
        };
        if let Err(e) = write_frame(client, &relayed).await {
            return AuthEnd::Io(e);
        }
        match code {
            Some(AUTH_OK) => return AuthEnd::Authenticated,
            // The server's last SASL word needs no answer; AuthenticationOk follows.
            Some(AUTH_SASL_FINAL) => continue,
            Some(_) => {}
            // ErrorResponse, NegotiateProtocolVersion, a notice: not a request. NegotiateProtocolVersion
            // comes before the first request, so it is relayed and the exchange goes on.
            None if relayed.kind == b'v' || relayed.kind == b'N' => continue,
            None if relayed.kind == b'E' => {
                return AuthEnd::Refused(LoginOutcome::refused(&relayed.body));
            }
            None => return AuthEnd::Handover,
        }
        // One answer from the client per request.
        let answer = match read_frame(client).await {
            Ok(f) => f,
            Err(e) => return e,
        };
        let last = answer.kind != b'p';
        if let Err(e) = write_frame(upstream, &answer).await {
            return AuthEnd::Io(e);
        }
        answered = true;
        if last {
            // Terminate or anything else: the byte relay carries the rest.
            return AuthEnd::Handover;
        }
    }
}

/// Reads one frame for the exchange, ending it on a bad or missing one.
async fn read_frame<S: AsyncRead + Unpin + ?Sized>(stream: &mut S) -> Result<Frame, AuthEnd> {
    super::read_frame(stream).await.map_err(|e| match e {
        FrameError::Malformed(m) => AuthEnd::Malformed(m),
        FrameError::Io(io) => AuthEnd::Io(io),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
        Frame {
            kind,
            body: bytes::Bytes::copy_from_slice(body),
        }
        .encode()
        .to_vec()
    }

    fn sasl(mechanisms: &[&str]) -> Vec<u8> {
        auth_message::sasl_offer(mechanisms).encode().to_vec()
    }

    /// A repository that offers PLUS, then runs a SASL exchange: the client sees no PLUS, every other
    /// byte both ways is relayed unchanged, and AuthenticationOk ends the phase.
    #[tokio::test]
    async fn relays_a_sasl_exchange_without_the_plus_offer() {
        let (mut client, mut client_end) = duplex(4096);
        let (mut upstream, mut upstream_end) = duplex(4096);
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let relay =
            tokio::spawn(
                async move { passthrough(&mut client_end, &mut upstream_end, deadline).await },
            );
        let first = frame(b'p', b"SCRAM-SHA-256\0\0\0\0\x08n,,n=,r=x");
        let continue_ = frame(b'R', b"\0\0\0\x0br=xy,s=c2FsdA==,i=4096");
        let final_ = frame(b'p', b"c=biws,r=xy,p=proof");
        let server_final = frame(b'R', b"\0\0\0\x0cv=sig");
        let ok = frame(b'R', &[0, 0, 0, 0]);
        upstream
            .write_all(&sasl(&["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]))
            .await
            .unwrap();
        let mut got = vec![0u8; sasl(&["SCRAM-SHA-256"]).len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, sasl(&["SCRAM-SHA-256"]));
        for (from_client, from_server) in [(&first, &continue_), (&final_, &server_final)] {
            client.write_all(from_client).await.unwrap();
            let mut seen = vec![0u8; from_client.len()];
            upstream.read_exact(&mut seen).await.unwrap();
            assert_eq!(&seen, from_client);
            upstream.write_all(from_server).await.unwrap();
            let mut seen = vec![0u8; from_server.len()];
            client.read_exact(&mut seen).await.unwrap();
            assert_eq!(&seen, from_server);
        }
        upstream.write_all(&ok).await.unwrap();
        let mut seen = vec![0u8; ok.len()];
        client.read_exact(&mut seen).await.unwrap();
        assert_eq!(seen, ok);
        assert!(matches!(relay.await.unwrap(), AuthEnd::Authenticated));
    }

    /// The failed-login limit sees each verdict before the client does: a withheld one is never
    /// relayed, so a locked-out client learns nothing of its password.
    #[tokio::test]
    async fn a_verdict_the_gate_refuses_is_not_relayed() {
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        for (verdict, expected) in [
            (
                frame(b'E', b"SFATAL\0C28P01\0Mno\0\0"),
                Verdict::WrongPassword,
            ),
            (frame(b'R', &[0, 0, 0, 0]), Verdict::Accepted),
            (frame(b'R', b"\0\0\0\x0cv=sig"), Verdict::Accepted),
        ] {
            let (mut client, mut client_end) = duplex(4096);
            let (mut upstream, mut upstream_end) = duplex(4096);
            upstream.write_all(&verdict).await.unwrap();
            let mut seen = Vec::new();
            let mut gate = |v: Verdict| {
                seen.push(v);
                Err(std::time::Duration::from_secs(7))
            };
            let end =
                passthrough_gated(&mut client_end, &mut upstream_end, deadline, &mut gate).await;
            assert!(
                matches!(end, AuthEnd::LockedOut(w) if w.as_secs() == 7),
                "{end:?}"
            );
            assert_eq!(seen, [expected]);
            drop(client_end);
            let mut relayed = Vec::new();
            client.read_to_end(&mut relayed).await.unwrap();
            assert!(relayed.is_empty(), "{relayed:?}");
        }
    }

    /// A host that cannot take sessions (57P03 shutting down, 57P01) answering the start-up is
    /// handed back unrelayed, so that the session can go to another host; the same refusal after the
    /// client has seen the exchange begin is relayed, as are other refusals.
    #[tokio::test]
    async fn an_unavailable_host_s_first_answer_is_handed_back_unrelayed() {
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let shutting_down = frame(
            b'E',
            b"SFATAL\0C57P03\0Mthe database system is shutting down\0\0",
        );
        let admin = frame(b'E', b"SFATAL\0C57P01\0Mterminating connection\0\0");
        let no_entry = frame(b'E', b"SFATAL\0C28000\0Mno pg_hba.conf entry\0\0");
        for (first, refusal, handed_back) in [
            (false, &shutting_down, true),
            (false, &admin, true),
            (false, &no_entry, false),
            (true, &shutting_down, false),
        ] {
            let (mut client, mut client_end) = duplex(4096);
            let (mut upstream, mut upstream_end) = duplex(4096);
            if first {
                upstream
                    .write_all(&frame(b'N', b"SNOTICE\0C00000\0Mhello\0\0"))
                    .await
                    .unwrap();
            }
            upstream.write_all(refusal).await.unwrap();
            let end = passthrough(&mut client_end, &mut upstream_end, deadline).await;
            match &end {
                AuthEnd::Unavailable(f) => {
                    assert!(handed_back, "{end:?}");
                    assert_eq!(f.encode().to_vec(), *refusal);
                }
                AuthEnd::Refused(_) => assert!(!handed_back, "{end:?}"),
                other => panic!("{other:?}"),
            }
            drop(client_end);
            let mut relayed = Vec::new();
            client.read_to_end(&mut relayed).await.unwrap();
            assert_eq!(relayed.ends_with(refusal), !handed_back, "{relayed:?}");
        }
    }

    /// A 28000 after the client answered a credential request (LDAP, PAM) is a failed guess; one
    /// before any answer (no pg_hba.conf entry) or the channel-binding refusal is not.
    #[tokio::test]
    async fn a_28000_counts_as_a_guess_only_after_the_client_answered() {
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let ldap = frame(b'E', b"SFATAL\0C28000\0MLDAP authentication failed\0\0");
        let binding = frame(
            b'E',
            b"SFATAL\0C28000\0MSCRAM channel binding negotiation error\0\0",
        );
        for (answer_first, refusal, counted) in [
            (true, &ldap, true),
            (false, &ldap, false),
            (true, &binding, false),
        ] {
            let (mut client, mut client_end) = duplex(4096);
            let (mut upstream, mut upstream_end) = duplex(4096);
            if answer_first {
                upstream
                    .write_all(&frame(b'R', &[0, 0, 0, 3]))
                    .await
                    .unwrap();
                client.write_all(&frame(b'p', b"guess\0")).await.unwrap();
            }
            upstream.write_all(refusal).await.unwrap();
            let mut seen = Vec::new();
            let mut gate = |v: Verdict| {
                seen.push(v);
                Ok(())
            };
            let end =
                passthrough_gated(&mut client_end, &mut upstream_end, deadline, &mut gate).await;
            assert!(matches!(end, AuthEnd::Refused(_)), "{end:?}");
            assert_eq!(seen == [Verdict::WrongPassword], counted, "{seen:?}");
        }
    }

    #[test]
    fn the_repositorys_channel_binding_refusal_gets_the_cure_as_its_hint() {
        let refusal = Frame {
            kind: b'E',
            body: bytes::Bytes::from_static(
                b"SFATAL\0C28000\0MSCRAM channel binding negotiation error\0\0",
            ),
        };
        let hinted = with_channel_binding_hint(refusal.clone());
        let expected = [
            &b"SFATAL\0C28000\0MSCRAM channel binding negotiation error\0H"[..],
            CHANNEL_BINDING_HINT.as_bytes(),
            b"\0\0",
        ]
        .concat();
        assert_eq!(&hinted.body[..], &expected[..]);
        // Once only; other refusals as they are.
        assert_eq!(with_channel_binding_hint(hinted.clone()).body, hinted.body);
        let other = Frame {
            kind: b'E',
            body: bytes::Bytes::from_static(b"SFATAL\0C28P01\0Mpassword authentication failed\0\0"),
        };
        assert_eq!(with_channel_binding_hint(other.clone()).body, other.body);
    }

    #[tokio::test]
    async fn a_refusal_is_relayed_and_hands_over_and_a_stall_times_out() {
        let (mut client, mut client_end) = duplex(4096);
        let (mut upstream, mut upstream_end) = duplex(4096);
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let error = frame(b'E', b"SFATAL\0C28P01\0Mno\0\0");
        upstream.write_all(&error).await.unwrap();
        let end = passthrough(&mut client_end, &mut upstream_end, deadline).await;
        assert!(
            matches!(&end, AuthEnd::Refused(LoginOutcome::Refused { sqlstate, .. }) if sqlstate == "28P01"),
            "{end:?}"
        );
        let mut seen = vec![0u8; error.len()];
        client.read_exact(&mut seen).await.unwrap();
        assert_eq!(seen, error);

        // A request the client never answers.
        upstream.write_all(&sasl(&["SCRAM-SHA-256"])).await.unwrap();
        let soon = Instant::now() + std::time::Duration::from_millis(100);
        let end = passthrough(&mut client_end, &mut upstream_end, soon).await;
        assert!(matches!(end, AuthEnd::TimedOut), "{end:?}");

        // An oversized answer is refused before it is read.
        let (mut client, mut client_end) = duplex(4096);
        let (mut upstream, mut upstream_end) = duplex(4096);
        upstream.write_all(&sasl(&["SCRAM-SHA-256"])).await.unwrap();
        client.write_all(&[b'p', 0x7f, 0, 0, 0]).await.unwrap();
        let end = passthrough(&mut client_end, &mut upstream_end, deadline).await;
        assert!(
            matches!(end, AuthEnd::Malformed(AuthMessageError::TooLarge { .. })),
            "{end:?}"
        );
        // Only PLUS offered: nothing a client behind pgssl can use.
        let (_client, mut client_end) = duplex(4096);
        upstream
            .write_all(&sasl(&["SCRAM-SHA-256-PLUS"]))
            .await
            .unwrap();
        let end = passthrough(&mut client_end, &mut upstream_end, deadline).await;
        assert!(matches!(end, AuthEnd::OnlyChannelBinding), "{end:?}");
    }
}
