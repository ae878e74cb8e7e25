"""A script written for Replicate, run against modelfolio unchanged: only the official `replicate`
client, configured by its own environment variables.

    REPLICATE_API_TOKEN=mf_... REPLICATE_BASE_URL=http://127.0.0.1:8000 \\
        python docs/replicate_script.py inference/models/digits/examples/digit-7.png

tests/stack/test_python_client.py runs it against the whole stack.
"""

from __future__ import annotations

import sys

import replicate


def main(picture: str) -> None:
    model = replicate.models.get("modelfolio/digits")
    version = model.latest_version
    print(f"{model.owner}/{model.name}: {model.run_count} runs; version {version.id[:12]}")
    print(f"created {version.created_at:%Y-%m-%d %H:%M} UTC")

    with open(picture, "rb") as image:
        prediction = replicate.predictions.create(version=version, input={"image": image})
    prediction.wait()
    print(f"prediction {prediction.id}: {prediction.status}, label: {prediction.output['label']}")

    page = replicate.predictions.list()
    print(f"your latest predictions: {[p.id for p in page.results[:3]]}")

    with open(picture, "rb") as image:
        upload = replicate.files.create(image)
    print(f"uploaded {upload.name} ({upload.size} bytes) as {upload.urls['get']}")

    output = replicate.run("modelfolio/digits", input={"image": upload.urls["get"]})
    print(f"run: label: {output['label']} ({output['confidence']:.0%} sure)")


if __name__ == "__main__":
    main(sys.argv[1])
