//! A PNG's width and height, from its IHDR chunk, which the format puts first: enough to tell
//! what size an image the WebUI returned really is, without an image library.

/// (width, height) from a PNG's first 24 bytes; `None` for anything that is not a PNG.
pub fn size(bytes: &[u8]) -> Option<(u32, u32)> {
    if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") || bytes.get(12..16)? != b"IHDR" {
        return None;
    }
    let be = |at: usize| Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    Some((be(16)?, be(20)?))
}

/// The same for a base64 PNG, as A1111's API returns images; decodes only the header.
pub fn size_of_base64(text: &str) -> Option<(u32, u32)> {
    use base64::Engine as _;
    // 32 characters are 24 bytes: signature, chunk length, "IHDR", width, height.
    let head = base64::engine::general_purpose::STANDARD
        .decode(text.get(..32)?)
        .ok()?;
    size(&head)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::Engine as _;

    /// The first bytes of a PNG of that size: enough for `size`.
    pub(crate) fn header(width: u32, height: u32) -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&width.to_be_bytes());
        png.extend_from_slice(&height.to_be_bytes());
        png.extend_from_slice(b"\x08\x02\x00\x00\x00");
        png
    }

    #[test]
    fn the_ihdr_is_read_and_other_data_rejected() {
        let mut png = header(64, 32);
        assert_eq!(size(&png), Some((64, 32)));
        assert_eq!(size(b"GIF89a"), None);
        assert_eq!(size(&png[..20]), None);
        png[12] = b'X';
        assert_eq!(size(&png), None);
    }

    #[test]
    fn base64_pngs_are_read_from_their_first_characters() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(header(512, 768));
        assert_eq!(size_of_base64(&encoded), Some((512, 768)));
        assert_eq!(
            size_of_base64("/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQ"),
            None
        );
        assert_eq!(size_of_base64("iVBOR"), None);
        assert_eq!(size_of_base64("not base64 at all, not at all!!!"), None);
    }
}
