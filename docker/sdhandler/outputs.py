"""What leaves the worker: images go to a bucket when one is configured, and every result is
measured before it is returned, since RunPod drops results over its limits (10 MB for /run,
20 MB for /runsync) and ends the job COMPLETED with no output."""

import json
import os

from .redaction import redact
from .rules import decode_image, env_number, image_kind

# Leaves room under /run's 10 MB for runpod's own envelope around the output.
DEFAULT_MAX_OUTPUT_MB = 9.0
BUCKET_SETTINGS = ("BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY",
                   "BUCKET_NAME")
# runpod's own rp_upload default: presigned URLs valid for 7 days.
URL_SECONDS = 7 * 24 * 3600


class OutputError(Exception):
    pass


def bucket_settings():
    """The four settings when all are set, None when none is, OutputError when only some are."""
    values = {name: os.environ.get(name, "").strip() for name in BUCKET_SETTINGS}
    if not any(values.values()):
        return None
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise OutputError(f"bucket: {', '.join(missing)} not set; set all of "
                          f"{', '.join(BUCKET_SETTINGS)} to upload images, or none of them")
    return values


def upload_images(result, job_id, settings):
    """Replace the base64 images of a WebUI answer by presigned URLs of uploaded copies."""
    import boto3  # Only workers with a bucket pay for its import.
    from botocore.config import Config

    client = boto3.client(
        "s3", endpoint_url=settings["BUCKET_ENDPOINT_URL"],
        aws_access_key_id=settings["BUCKET_ACCESS_KEY_ID"],
        aws_secret_access_key=settings["BUCKET_SECRET_ACCESS_KEY"],
        region_name=os.environ.get("BUCKET_REGION") or "us-east-1",
        config=Config(signature_version="s3v4", retries={"max_attempts": 3, "mode": "standard"}))
    bucket = settings["BUCKET_NAME"]
    safe_id = "".join(c if c.isalnum() or c in "._-" else "_" for c in str(job_id)) or "job"

    def upload(index, encoded):
        data = decode_image(encoded) if isinstance(encoded, str) else None
        kind = image_kind(data) if data else None
        if kind is None:
            return encoded  # Not an image (a script's text output): returned as it came.
        key = f"{safe_id}/{index}.{'jpg' if kind == 'jpeg' else kind}"
        try:
            client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=f"image/{kind}")
            return client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=URL_SECONDS)
        except Exception as exc:  # noqa: BLE001 - botocore raises many kinds; all mean the same
            raise OutputError(f"bucket: uploading {key} to {bucket} at "
                              f"{settings['BUCKET_ENDPOINT_URL']} failed: "
                              f"{redact(str(exc))[:300]}") from None

    if isinstance(result.get("images"), list):
        result["images"] = [upload(i, image) for i, image in enumerate(result["images"])]
    if isinstance(result.get("image"), str):
        result["image"] = upload(0, result["image"])
    return result


def serialized_size(result):
    # What runpod posts: json.dumps(..., ensure_ascii=False), UTF-8.
    return len(json.dumps(result, ensure_ascii=False).encode("utf-8"))


def deliver(result, job_id):
    """The result as it may leave the worker: images uploaded when a bucket is configured, and
    within HANDLER_MAX_OUTPUT_MB; OutputError otherwise."""
    settings = bucket_settings()
    if settings is not None and isinstance(result, dict):
        result = upload_images(result, job_id, settings)
    limit_mb = env_number("HANDLER_MAX_OUTPUT_MB", DEFAULT_MAX_OUTPUT_MB)
    size = serialized_size(result)
    if size > limit_mb * 1e6:
        fix = ("ask for fewer or smaller images" if settings is not None else
               "ask for fewer or smaller images, or configure a bucket (BUCKET_ENDPOINT_URL, "
               "BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY, BUCKET_NAME) so images are "
               "returned as URLs")
        raise OutputError(f"output: the result is {size / 1e6:.1f} MB, over "
                          f"HANDLER_MAX_OUTPUT_MB={limit_mb:g} (RunPod drops results over 10 MB "
                          f"on /run, 20 MB on /runsync); {fix}")
    return result
