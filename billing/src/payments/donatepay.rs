//! DonatePay's wire format, and nothing else: every DonatePay field name lives in this file.
//!
//! What is public about DonatePay's API (donatepay.ru; no official OpenAPI document was found
//! in the sources searched, so this follows the format its public API clients use):
//! - `GET {api_url}/transactions?access_token=KEY&type=donation&status=success&limit=100&order=DESC`
//!   answers `{"status": "success", "data": [transaction, …]}`;
//! - a transaction has `id` (number), `type` (`"donation"`), `status` (`"success"` when paid),
//!   `sum` (a decimal, often sent as a string: `"599.00"`), `comment` (the donor's message;
//!   some payloads carry it in `vars.comment`), `created_at`, and sometimes `currency`
//!   (absent means RUB).
//!
//! The webhook: DonatePay's own notification signing is not documented publicly, so the
//! service accepts one transaction object (the same shape as an element of `data`) as the
//! JSON body, signed with `X-Signature: <hex HMAC-SHA256(webhook_secret, raw body)>`
//! (an optional `sha256=` prefix is allowed). A relay that forwards DonatePay's callback
//! must sign it that way. If DonatePay's real format differs, only this file changes.

use serde::Deserialize;
use serde_json::Value;

use super::Notification;
use crate::config::parse_price_cents;

/// Provider name stored with payments.
pub const PROVIDER: &str = "donatepay";
/// Header carrying the webhook signature.
pub const SIGNATURE_HEADER: &str = "x-signature";
/// Currency DonatePay assumes when a transaction doesn't say.
pub const DEFAULT_CURRENCY: &str = "RUB";

/// The transactions API path and query, relative to `api_url`.
pub fn transactions_url(api_url: &str, api_key: &str) -> String {
    format!(
        "{}/transactions?access_token={}&type=donation&status=success&limit=100&order=DESC",
        api_url.trim_end_matches('/'),
        urlencode(api_key)
    )
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(Deserialize)]
struct TransactionsAnswer {
    status: String,
    #[serde(default)]
    data: Vec<Value>,
}

/// Parses the transactions API answer into notifications (bad elements are skipped and
/// logged: one odd transaction must not block the others).
pub fn parse_transactions(body: &[u8]) -> anyhow::Result<Vec<Notification>> {
    let answer: TransactionsAnswer = serde_json::from_slice(body)?;
    anyhow::ensure!(
        answer.status == "success",
        "DonatePay answered status {:?}",
        answer.status
    );
    Ok(answer
        .data
        .into_iter()
        .filter_map(|v| match parse_transaction(&v) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "skipping unreadable DonatePay transaction");
                None
            }
        })
        .collect())
}

/// Parses a webhook body (one transaction).
pub fn parse_webhook(body: &[u8]) -> anyhow::Result<Notification> {
    let v: Value = serde_json::from_slice(body)?;
    parse_transaction(&v)
}

fn parse_transaction(v: &Value) -> anyhow::Result<Notification> {
    let id = match v.get("id") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => s.clone(),
        _ => anyhow::bail!("transaction without a usable id"),
    };
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("donation");
    let status = v.get("status").and_then(Value::as_str).unwrap_or("");
    let sum = match v.get("sum") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => anyhow::bail!("transaction {id} without a sum"),
    };
    let amount_cents = parse_price_cents(&sum)?;
    let comment = v
        .get("comment")
        .and_then(Value::as_str)
        .or_else(|| v.pointer("/vars/comment").and_then(Value::as_str))
        .unwrap_or("")
        .to_owned();
    let currency = v
        .get("currency")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_CURRENCY)
        .to_uppercase();
    Ok(Notification {
        txn_id: id,
        paid: kind == "donation" && status == "success",
        amount_cents,
        currency,
        comment,
        raw: v.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_shapes() {
        let n = parse_webhook(
            br#"{"id": 77, "type": "donation", "status": "success", "sum": "599.00",
                 "comment": "thanks PLG:abc", "created_at": "2025-01-01 10:00:00"}"#,
        )
        .unwrap();
        assert_eq!(n.txn_id, "77");
        assert!(n.paid);
        assert_eq!(n.amount_cents, 59900);
        assert_eq!(n.currency, "RUB");
        assert_eq!(n.comment, "thanks PLG:abc");
        let list = parse_transactions(
            br#"{"status": "success", "data": [
                {"id": "8", "status": "success", "sum": 5.99, "currency": "usd",
                 "vars": {"comment": "PLG:x"}},
                {"status": "success", "sum": "1"},
                {"id": 9, "status": "wait", "sum": "1"}]}"#,
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].amount_cents, 599);
        assert_eq!(list[0].currency, "USD");
        assert_eq!(list[0].comment, "PLG:x");
        assert!(!list[1].paid);
        assert!(parse_transactions(br#"{"status": "error", "message": "bad token"}"#).is_err());
        assert_eq!(
            transactions_url("https://x/api/v1/", "a b&c"),
            "https://x/api/v1/transactions?access_token=a%20b%26c&type=donation&status=success&limit=100&order=DESC"
        );
    }
}
