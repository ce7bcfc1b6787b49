//! The warm-up generation of `WEBUI_READY=warmup`: its size (`WEBUI_WARMUP_SIZE`), the txt2img
//! it sends.

pub const WARMUP_PATH: &str = "/sdapi/v1/txt2img";

/// The size of the warm-up generation (`WEBUI_WARMUP_SIZE`). A1111 picks kernels per shape, so a
/// first job at another size still pays some first-use work: set it to the jobs' usual size to
/// move that into the start-up too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmupSize {
    pub width: u32,
    pub height: u32,
}

impl WarmupSize {
    /// The smallest generation A1111 does: the default with `WEBUI_DEVICE=cpu`, where every
    /// pixel costs seconds.
    pub const SMALLEST: WarmupSize = WarmupSize {
        width: 64,
        height: 64,
    };
    /// The default on a GPU: SD 1.x's native size, the most common job. Measured on an H200 it
    /// costs no more than 64x64 (one step either way) and leaves the first 512x512 job as fast
    /// as a warm one, where 64x64 left it at twice that.
    pub const GPU_DEFAULT: WarmupSize = WarmupSize {
        width: 512,
        height: 512,
    };

    /// "512x768": each side a multiple of 8 (the VAE's factor) from 64 to 2048 (A1111's range).
    pub fn parse(s: &str) -> Result<WarmupSize, String> {
        let side = |v: &str| {
            v.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (64..=2048).contains(n) && n % 8 == 0)
        };
        let parsed = s
            .trim()
            .split_once(['x', 'X'])
            .and_then(|(w, h)| Some((side(w)?, side(h)?)));
        match parsed {
            Some((width, height)) => Ok(WarmupSize { width, height }),
            None => {
                Err("use WIDTHxHEIGHT, each a multiple of 8 from 64 to 2048, e.g. 512x512".into())
            }
        }
    }
}

impl std::fmt::Display for WarmupSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// One step at `size`, nothing written to A1111's outputs folder. The retry has another seed and
/// prompt: A1111's NaN check stops a generation in the UNet, before the VAE ever runs, so a
/// warm-up that met NaNs tries once more.
pub fn warmup_payload(size: WarmupSize, retry: bool) -> String {
    let (prompt, seed) = if retry {
        ("a landscape", 2)
    } else {
        ("a photograph", 1)
    };
    serde_json::json!({
        "prompt": prompt, "negative_prompt": "", "seed": seed, "steps": 1,
        "width": size.width, "height": size.height, "batch_size": 1, "n_iter": 1,
        "cfg_scale": 7, "save_images": false, "send_images": true,
        "do_not_save_samples": true, "do_not_save_grid": true,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warmup_payload_asks_for_one_unsaved_step_at_the_size() {
        for retry in [false, true] {
            let size = WarmupSize::parse("512x768").expect("a size");
            let v: serde_json::Value =
                serde_json::from_str(&warmup_payload(size, retry)).expect("valid JSON");
            assert_eq!(v["steps"], 1);
            assert_eq!(
                (v["width"].as_u64(), v["height"].as_u64()),
                (Some(512), Some(768))
            );
            assert_eq!(v["save_images"], false);
            assert_eq!(v["send_images"], true);
            assert_eq!(v["do_not_save_samples"], true);
            assert_eq!(v["do_not_save_grid"], true);
        }
        let first: serde_json::Value =
            serde_json::from_str(&warmup_payload(WarmupSize::SMALLEST, false)).expect("JSON");
        let retry: serde_json::Value =
            serde_json::from_str(&warmup_payload(WarmupSize::SMALLEST, true)).expect("JSON");
        assert_ne!(first["seed"], retry["seed"]);
        assert_eq!(first["width"], 64);
    }

    #[test]
    fn warmup_sizes_are_what_a1111_can_generate() {
        assert_eq!(WarmupSize::parse("64x64"), Ok(WarmupSize::SMALLEST));
        assert_eq!(
            WarmupSize::parse(" 1024X576 "),
            Ok(WarmupSize {
                width: 1024,
                height: 576
            })
        );
        for bad in [
            "512", "512x", "x512", "500x512", "32x32", "4096x512", "-64x64", "512*512", "",
        ] {
            assert!(WarmupSize::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            WarmupSize::parse("768x512").map(|s| s.to_string()),
            Ok("768x512".into())
        );
    }
}
