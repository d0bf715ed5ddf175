"""Throughput of whole-image embeddings vs. the default region-level concept presence.

An encoder of CLIP ViT-B/32's shape (random weights cost the same as trained ones), 224 px inputs,
K=600 concepts. Both paths include preprocessing; timings are interleaved and the median is kept.
Run: python benchmarks/bench_presence.py [--images 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

from infincond import ConceptEncoder, concept_presence


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--concepts", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig())  # the defaults are ViT-B/32's shape
    encoder = ConceptEncoder(model, CLIPImageProcessor(), "random-clip-vit-b32", "none", region_mode="dense")
    concept_embeddings = F.normalize(torch.randn(args.concepts, encoder.embed_dim), dim=-1)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)) for _ in range(args.images)]
    batches = [images[i : i + args.batch_size] for i in range(0, len(images), args.batch_size)]

    def whole() -> None:
        for batch in batches:
            encoder.encode_images(batch)

    def regions() -> None:
        for batch in batches:
            concept_presence(encoder.encode_regions(batch).embeddings, concept_embeddings)

    whole(), regions()  # warm-up
    times: dict[str, list[float]] = {"whole": [], "regions": []}
    for _ in range(args.repeats):
        for name, fn in (("whole", whole), ("regions", regions)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"torch threads: {torch.get_num_threads()}, images: {args.images}, concepts: {args.concepts}, "
          f"regions per image: {len(encoder.region_boxes)}")
    print(f"whole-image embeddings        {args.images / med['whole']:8.1f} img/s")
    print(f"region-level presence (dense) {args.images / med['regions']:8.1f} img/s")
    print(f"cost ratio regions / whole    {med['regions'] / med['whole']:8.3f}x")


if __name__ == "__main__":
    main()
