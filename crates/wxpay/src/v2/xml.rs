//! The safe, flat `<xml>` codec of API v2.
//!
//! WeChat's v2 messages are one root element with one flat child per parameter. This codec reads
//! exactly that and nothing more: a DOCTYPE, any entity reference other than the five predefined
//! ones (and numeric character references), nested elements, attributes on children, or a body over
//! [`MAX_XML_BYTES`] are refused. There is no DTD processing at all, so XXE and entity expansion
//! ("billion laughs") cannot happen.

use std::collections::BTreeMap;

use quick_xml::Reader;
use quick_xml::events::Event;

/// The largest v2 XML document accepted (64 KiB).
pub const MAX_XML_BYTES: usize = 64 * 1024;

/// A flat v2 message: parameter name to value, in ASCII order of names (the signing order).
pub type XmlMap = BTreeMap<String, String>;

/// Why an XML document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XmlError {
    /// The body is larger than [`MAX_XML_BYTES`].
    #[error("XML body of {0} bytes is over the 64 KiB limit")]
    TooLarge(usize),
    /// The body is empty or whitespace.
    #[error("XML body is empty")]
    Empty,
    /// The bytes are not UTF-8.
    #[error("XML body is not UTF-8")]
    NotUtf8,
    /// A `<!DOCTYPE ...>` (and with it any entity declaration).
    #[error("XML with a DOCTYPE is refused (DTDs and entity declarations are not allowed)")]
    Doctype,
    /// An entity reference other than `&lt; &gt; &amp; &apos; &quot;`.
    #[error(
        "XML entity reference &{0}; is refused (only the five predefined entities are allowed)"
    )]
    Entity(String),
    /// An element inside a parameter element.
    #[error("XML element <{0}> is nested; v2 messages are flat")]
    Nested(String),
    /// The root element is not the expected one.
    #[error("XML root element must be <{expected}>, found <{found}>")]
    WrongRoot {
        /// The expected root name.
        expected: &'static str,
        /// The root found.
        found: String,
    },
    /// The same parameter twice.
    #[error("XML parameter <{0}> appears twice")]
    Duplicate(String),
    /// Text outside parameter elements, or content after the root.
    #[error("XML has unexpected content {0}")]
    Unexpected(String),
    /// A parameter name or value that cannot be written as XML.
    #[error("cannot encode parameter {0}: invalid name or control character")]
    Unencodable(String),
    /// Not well-formed XML.
    #[error("malformed XML: {0}")]
    Malformed(String),
}

/// Decodes a v2 `<xml>` document into its parameters.
///
/// # Errors
/// [`XmlError`] for anything that is not a small, flat, DTD-free `<xml>` document.
pub fn decode(body: &[u8]) -> Result<XmlMap, XmlError> {
    decode_with_root(body, "xml")
}

/// Decodes a flat document whose root element is `root` (the v2 refund `req_info` plaintext uses
/// `<root>`).
///
/// # Errors
/// As [`decode`].
pub fn decode_with_root(body: &[u8], root: &'static str) -> Result<XmlMap, XmlError> {
    if body.len() > MAX_XML_BYTES {
        return Err(XmlError::TooLarge(body.len()));
    }
    let text = std::str::from_utf8(body).map_err(|_| XmlError::NotUtf8)?;
    if text.trim().is_empty() {
        return Err(XmlError::Empty);
    }
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;

    #[derive(PartialEq)]
    enum Where {
        Before,
        InRoot,
        InParam,
        After,
    }
    let mut at = Where::Before;
    let mut map = XmlMap::new();
    let mut name = String::new();
    let mut value = String::new();
    let malformed = |e: quick_xml::Error| XmlError::Malformed(e.to_string());

    loop {
        let event = reader.read_event().map_err(malformed)?;
        let is_empty = matches!(event, Event::Empty(_));
        match event {
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
            Event::Start(start) | Event::Empty(start) if at == Where::Before => {
                let found = start.name().as_ref().to_owned();
                if found != root {
                    return Err(XmlError::WrongRoot {
                        expected: root,
                        found,
                    });
                }
                at = if is_empty {
                    Where::After
                } else {
                    Where::InRoot
                };
            }
            Event::Start(start) => match at {
                Where::InRoot => {
                    name = start.name().as_ref().to_owned();
                    value.clear();
                    at = Where::InParam;
                }
                Where::InParam => {
                    return Err(XmlError::Nested(start.name().as_ref().to_owned()));
                }
                _ => return Err(XmlError::Unexpected("element after the root".into())),
            },
            Event::Empty(start) => match at {
                Where::InRoot => {
                    let key = start.name().as_ref().to_owned();
                    insert(&mut map, key, String::new())?;
                }
                Where::InParam => {
                    return Err(XmlError::Nested(start.name().as_ref().to_owned()));
                }
                _ => return Err(XmlError::Unexpected("element after the root".into())),
            },
            Event::End(_) => match at {
                Where::InParam => {
                    insert(
                        &mut map,
                        std::mem::take(&mut name),
                        std::mem::take(&mut value),
                    )?;
                    at = Where::InRoot;
                }
                Where::InRoot => at = Where::After,
                _ => return Err(XmlError::Unexpected("closing tag".into())),
            },
            Event::Text(t) => {
                let raw = t.into_inner();
                if at == Where::InParam {
                    value.push_str(&raw);
                } else if !raw.trim().is_empty() {
                    return Err(XmlError::Unexpected("text outside a parameter".into()));
                }
            }
            Event::CData(c) => {
                if at != Where::InParam {
                    return Err(XmlError::Unexpected("CDATA outside a parameter".into()));
                }
                let raw = c.into_inner();
                value.push_str(&raw);
            }
            Event::GeneralRef(r) => {
                let resolved = if r.is_char_ref() {
                    r.resolve_char_ref().map_err(malformed)?
                } else {
                    match r.as_ref() {
                        "lt" => Some('<'),
                        "gt" => Some('>'),
                        "amp" => Some('&'),
                        "apos" => Some('\''),
                        "quot" => Some('"'),
                        other => {
                            return Err(XmlError::Entity(other.to_owned()));
                        }
                    }
                };
                let Some(ch) = resolved else {
                    return Err(XmlError::Malformed("invalid character reference".into()));
                };
                if at != Where::InParam {
                    return Err(XmlError::Unexpected("reference outside a parameter".into()));
                }
                value.push(ch);
            }
        }
    }
    match at {
        Where::After => Ok(map),
        Where::Before => Err(XmlError::Empty),
        _ => Err(XmlError::Malformed(
            "document ends inside an element".into(),
        )),
    }
}

fn insert(map: &mut XmlMap, key: String, value: String) -> Result<(), XmlError> {
    if map.contains_key(&key) {
        return Err(XmlError::Duplicate(key));
    }
    map.insert(key, value);
    Ok(())
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

fn is_xml_char(c: char) -> bool {
    !matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
}

/// Encodes parameters as a v2 `<xml>` document: integers as plain text, everything else in CDATA
/// (as WeChat's own examples do).
///
/// # Errors
/// [`XmlError::Unencodable`] for a name that is not an XML name or a value with a control
/// character XML cannot carry; [`XmlError::TooLarge`] when the document would be over
/// [`MAX_XML_BYTES`], which [`decode`] (and so this crate at the other end) refuses. A value
/// can grow when encoded: each `]]>` in it becomes 15 bytes.
pub fn encode<'a, I>(params: I) -> Result<String, XmlError>
where
    I: IntoIterator<Item = (&'a String, &'a String)>,
{
    encode_with_root(params, "xml")
}

/// As [`encode`] with another root name (`root` for refund `req_info`).
///
/// # Errors
/// As [`encode`].
pub fn encode_with_root<'a, I>(params: I, root: &str) -> Result<String, XmlError>
where
    I: IntoIterator<Item = (&'a String, &'a String)>,
{
    let mut out = String::with_capacity(512);
    out.push('<');
    out.push_str(root);
    out.push('>');
    for (k, v) in params {
        if !is_name(k) || !v.chars().all(is_xml_char) {
            return Err(XmlError::Unencodable(k.clone()));
        }
        out.push('<');
        out.push_str(k);
        out.push('>');
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(v);
        } else {
            out.push_str("<![CDATA[");
            out.push_str(&v.replace("]]>", "]]]]><![CDATA[>"));
            out.push_str("]]>");
        }
        out.push_str("</");
        out.push_str(k);
        out.push('>');
    }
    out.push_str("</");
    out.push_str(root);
    out.push('>');
    if out.len() > MAX_XML_BYTES {
        return Err(XmlError::TooLarge(out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> XmlMap {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Found by the `xml_decode` fuzz target: a value under the limit whose `]]>` sequences
    /// grow it past the limit when encoded. Encoding refuses what decoding would refuse.
    #[test]
    fn encoding_refuses_what_decoding_would_refuse() {
        let value = "]]>".repeat(5_000);
        let body = format!("<xml><a>{}</a></xml>", value.replace('>', "&gt;"));
        assert!(body.len() <= MAX_XML_BYTES);
        let decoded = decode(body.as_bytes()).unwrap();
        assert_eq!(decoded["a"], value);
        assert!(matches!(encode(&decoded), Err(XmlError::TooLarge(n)) if n > MAX_XML_BYTES));
        // Just under the limit: encodes, and decodes to the same map.
        let fits = map(&[("a", &"]]>".repeat(4_000))]);
        let xml = encode(&fits).unwrap();
        assert!(xml.len() <= MAX_XML_BYTES);
        assert_eq!(decode(xml.as_bytes()).unwrap(), fits);
    }

    #[test]
    fn reads_cdata_and_plain_text() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<xml>
  <return_code><![CDATA[SUCCESS]]></return_code>
  <total_fee>1</total_fee>
  <body>a &amp; b &#x4e2d;</body>
  <empty/>
  <!-- a comment -->
</xml>"#;
        let m = decode(body).unwrap();
        assert_eq!(
            m,
            map(&[
                ("return_code", "SUCCESS"),
                ("total_fee", "1"),
                ("body", "a & b 中"),
                ("empty", "")
            ])
        );
    }

    #[test]
    fn refuses_doctype_and_entities() {
        let xxe = br#"<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><a>&xxe;</a></xml>"#;
        assert_eq!(decode(xxe), Err(XmlError::Doctype));
        let laughs = br#"<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><xml><a>&lol2;</a></xml>"#;
        assert_eq!(decode(laughs), Err(XmlError::Doctype));
        let undeclared = b"<xml><a>&xxe;</a></xml>";
        assert_eq!(decode(undeclared), Err(XmlError::Entity("xxe".into())));
    }

    #[test]
    fn refuses_nesting_wrong_root_duplicates_and_size() {
        assert!(
            matches!(decode(b"<xml><a><b>1</b></a></xml>"), Err(XmlError::Nested(n)) if n == "b")
        );
        assert!(matches!(
            decode(b"<root><a>1</a></root>"),
            Err(XmlError::WrongRoot { .. })
        ));
        assert_eq!(
            decode(b"<xml><a>1</a><a>2</a></xml>"),
            Err(XmlError::Duplicate("a".into()))
        );
        let big = format!("<xml><a>{}</a></xml>", "x".repeat(MAX_XML_BYTES));
        assert!(matches!(decode(big.as_bytes()), Err(XmlError::TooLarge(_))));
        assert_eq!(decode(b"   "), Err(XmlError::Empty));
        assert_eq!(decode(&[0x3c, 0x78, 0xff, 0xfe]), Err(XmlError::NotUtf8));
        assert!(matches!(
            decode(b"<xml><a>1</a>"),
            Err(XmlError::Malformed(_))
        ));
        assert!(matches!(
            decode(b"<xml><a>1</b></xml>"),
            Err(XmlError::Malformed(_))
        ));
        assert!(matches!(
            decode(b"<xml>stray<a>1</a></xml>"),
            Err(XmlError::Unexpected(_))
        ));
        assert!(matches!(
            decode(b"<xml></xml><xml></xml>"),
            Err(XmlError::Unexpected(_))
        ));
    }

    #[test]
    fn encodes_cdata_safely() {
        let m = map(&[("a", "x]]>y"), ("n", "12"), ("s", "<tag>&")]);
        let xml = encode(&m).unwrap();
        assert_eq!(
            xml,
            "<xml><a><![CDATA[x]]]]><![CDATA[>y]]></a><n>12</n><s><![CDATA[<tag>&]]></s></xml>"
        );
        assert_eq!(decode(xml.as_bytes()).unwrap(), m);
        assert!(encode(&map(&[("bad name", "1")])).is_err());
        assert!(encode(&map(&[("a", "\u{1}")])).is_err());
    }

    proptest::proptest! {
        #[test]
        fn round_trip(m in proptest::collection::btree_map(
            "[a-z_][a-z0-9_]{0,12}",
            "[^\u{0}-\u{8}\u{b}\u{c}\u{e}-\u{1f}\u{fffe}\u{ffff}\r]{0,40}",
            0..12,
        )) {
            let xml = encode(&m).unwrap();
            proptest::prop_assert_eq!(decode(xml.as_bytes()).unwrap(), m);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = decode(&bytes);
        }
    }
}
