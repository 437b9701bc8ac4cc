//! The query string, decoded once. A key may repeat (`?tag=a&tag=b`): every value is kept, in
//! order.

use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct Query(HashMap<String, Vec<String>>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()).into_owned() {
            map.entry(key).or_default().push(value);
        }
        Query(map)
    }

    /// The value of `key`; the last one if it repeats.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.last()).map(String::as_str)
    }

    /// Every value of `key`, in the order given; empty if it is absent.
    pub fn get_all(&self, key: &str) -> &[String] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_keep_every_value() {
        let q = Query::parse(Some("tag=a&n=1&tag=b%2Bc&tag=a&digest="));
        assert_eq!(q.get_all("tag"), ["a", "b+c", "a"]);
        assert_eq!(q.get("tag"), Some("a"), "the last one");
        assert_eq!(q.get("n"), Some("1"));
        assert_eq!(q.get("digest"), Some(""));
        assert!(q.get_all("none").is_empty());
        assert_eq!(q.get("none"), None);
        assert!(Query::parse(None).get_all("tag").is_empty());
    }
}
