//! The `url_normalize` stage: a `url` column with each document's URL in one canonical
//! spelling, so that exact URL dedup (`exact_dedup` with `column = "url"`) and the URL filter
//! see one form per page.
//!
//! What: reads the URL from a JSON field of `meta` (the WARC reader puts it there) or from a
//! column, and writes `url`: scheme and host lowercased, the default port (`:80` for http,
//! `:443` for https) dropped, an empty path made `/`, `.` and `..` path segments resolved,
//! the fragment dropped, and tracking parameters (`utm_*`, `fbclid`, `gclid`, `mc_cid`,
//! `mc_eid`) removed from the query unless `strip_tracking = false`. A document without a
//! URL gets null; nothing is dropped.
//!
//! ```toml
//! [[stages]]
//! type = "url_normalize"
//!
//! [[stages]]
//! type = "exact_dedup"
//! column = "url"
//! normalize = { lowercase = false, norm_whitespace = false, remove_punctuation = false, norm_unicode_diacritics = false, norm_numbers = false }
//! ```

use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field};
use quern_core::stage::{string_column, with_column, BatchCtx, Stage, Verdict};
use quern_core::Result;
use serde::Deserialize;

/// `url_normalize` configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UrlNormalizeConfig {
    /// Column holding the URL, or the JSON metadata. Default `"meta"`.
    pub column: String,
    /// Field of the JSON object in `column` holding the URL; empty: the column is the URL.
    /// Default `"url"`.
    pub json_field: String,
    /// Remove tracking query parameters. Default true.
    pub strip_tracking: bool,
}

impl Default for UrlNormalizeConfig {
    fn default() -> Self {
        UrlNormalizeConfig {
            column: "meta".into(),
            json_field: "url".into(),
            strip_tracking: true,
        }
    }
}

fn tracking(param: &str) -> bool {
    let name = param.split('=').next().unwrap_or("").to_ascii_lowercase();
    name.starts_with("utm_") || matches!(name.as_str(), "fbclid" | "gclid" | "mc_cid" | "mc_eid")
}

/// Resolves `.` and `..` segments of an absolute path.
fn remove_dots(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    for (i, s) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        match *s {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// The canonical spelling of `url`; `None` when it is not an absolute http(s)-like URL.
pub fn normalize_url(url: &str, strip_tracking: bool) -> Option<String> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    let rest = rest.split('#').next().unwrap_or("");
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
            if p.chars().all(|c| c.is_ascii_digit()) {
                (h, Some(p))
            } else {
                (hostport, None)
            }
        }
        _ => (hostport, None),
    };
    if host.is_empty() {
        return None;
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let port = match (scheme.as_str(), port) {
        (_, Some("")) | ("http", Some("80")) | ("https", Some("443")) => None,
        (_, p) => p,
    };
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        remove_dots(path)
    };
    let mut out = format!("{scheme}://");
    if let Some(u) = userinfo {
        out.push_str(u);
        out.push('@');
    }
    out.push_str(&host);
    if let Some(p) = port {
        out.push(':');
        out.push_str(p);
    }
    out.push_str(&path);
    if let Some(q) = query {
        let kept: Vec<&str> = q
            .split('&')
            .filter(|p| !(p.is_empty() || strip_tracking && tracking(p)))
            .collect();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
    }
    Some(out)
}

/// The stage.
pub struct UrlNormalize {
    name: String,
    cfg: UrlNormalizeConfig,
}

impl UrlNormalize {
    pub fn new(name: &str, cfg: UrlNormalizeConfig) -> Self {
        UrlNormalize {
            name: name.to_string(),
            cfg,
        }
    }

    fn url_of<'a>(&self, v: &'a str) -> Option<std::borrow::Cow<'a, str>> {
        if self.cfg.json_field.is_empty() {
            return Some(std::borrow::Cow::Borrowed(v));
        }
        let m: serde_json::Value = serde_json::from_str(v).ok()?;
        m.get(&self.cfg.json_field)?
            .as_str()
            .map(|s| std::borrow::Cow::Owned(s.to_string()))
    }
}

impl Stage for UrlNormalize {
    fn name(&self) -> &str {
        &self.name
    }
    fn reads(&self) -> Vec<String> {
        vec![self.cfg.column.clone()]
    }
    fn adds(&self) -> Vec<Field> {
        vec![Field::new("url", DataType::Utf8, true)]
    }
    fn apply(&self, _ctx: &BatchCtx, batch: RecordBatch) -> Result<Verdict> {
        let col = string_column(&batch, &self.cfg.column, &self.name)?;
        let urls: StringArray = (0..col.len())
            .map(|i| {
                if col.is_null(i) {
                    return None;
                }
                let u = self.url_of(col.value(i))?;
                normalize_url(&u, self.cfg.strip_tracking)
            })
            .collect();
        let out = with_column(
            &batch,
            Field::new("url", DataType::Utf8, true),
            Arc::new(urls),
        )?;
        Ok(Verdict::columns(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_take_one_spelling() {
        let cases = [
            ("HTTP://Example.COM", Some("http://example.com/")),
            (
                "http://example.com:80/a/./b/../c?x=1#frag",
                Some("http://example.com/a/c?x=1"),
            ),
            (
                "https://example.com:443/?utm_source=x&id=7&fbclid=y",
                Some("https://example.com/?id=7"),
            ),
            (
                "https://example.com:8443/p/",
                Some("https://example.com:8443/p/"),
            ),
            (
                "https://user@Host.example./q",
                Some("https://user@host.example/q"),
            ),
            ("http://[::1]:8080/", Some("http://[::1]:8080/")),
            ("/relative/path", None),
            ("mailto:someone@example.com", None),
            ("http:///nohost", None),
        ];
        for (u, want) in cases {
            assert_eq!(normalize_url(u, true).as_deref(), want, "{u}");
        }
        assert_eq!(
            normalize_url("https://a.example/?utm_medium=m", false).as_deref(),
            Some("https://a.example/?utm_medium=m")
        );
    }

    #[test]
    fn the_stage_reads_meta_and_writes_url() {
        use arrow::array::AsArray;
        use arrow::datatypes::Schema;
        let schema = Arc::new(Schema::new(vec![Field::new("meta", DataType::Utf8, true)]));
        let b = RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(vec![
                Some(r#"{"url": "HTTPS://News.example/a?utm_campaign=z"}"#),
                Some(r#"{"title": "no url"}"#),
                None,
                Some("not json"),
            ]))],
        )
        .unwrap();
        let v = UrlNormalize::new("u", UrlNormalizeConfig::default())
            .apply(&BatchCtx::default(), b)
            .unwrap();
        assert!(v.keep.is_none());
        let u = v.batch.column_by_name("url").unwrap().as_string::<i32>();
        assert_eq!(u.value(0), "https://news.example/a");
        assert!(u.is_null(1) && u.is_null(2) && u.is_null(3));
    }
}
