"""Write the images of SRC (recursive) as JPEGs of one encoding into DST, named by their
path in SRC: the same photos at another quality and chroma subsampling, to measure how the
loaders' rates depend on the encoding (docs/data_pipeline.md).

    python dev/reencode_jpegs.py ../shared/data/coco-tiny work_dirs/coco-q90-420 \\
        --quality 90 --subsampling 420
"""
import argparse
import os
import os.path as osp

from PIL import Image, ImageOps

from hgkd_mm.benchmark.runner_loop import image_files

SUBSAMPLING = {'444': 0, '422': 1, '420': 2}  # PIL's codes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src')
    parser.add_argument('dst')
    parser.add_argument('--quality', type=int, default=90, help='1-95 (PIL)')
    parser.add_argument('--subsampling', choices=sorted(SUBSAMPLING), default='420')
    args = parser.parse_args(argv)
    if not 1 <= args.quality <= 95:
        parser.error(f'--quality must be in 1-95, got {args.quality}')
    if osp.abspath(args.dst) == osp.abspath(args.src):
        parser.error('dst must not be src: the originals would be overwritten')
    files = image_files(args.src, option='src')
    targets = {}
    for name in files:
        target = osp.splitext(name.replace(os.sep, '_'))[0] + '.jpg'
        if target in targets:
            parser.error(f'{name} and {targets[target]} would both be written to {target}')
        targets[target] = name
    os.makedirs(args.dst, exist_ok=True)
    for target, name in targets.items():
        with Image.open(osp.join(args.src, name)) as image:
            # upright, as the loaders see it: the EXIF orientation is not written again
            upright = ImageOps.exif_transpose(image).convert('RGB')
        upright.save(osp.join(args.dst, target), quality=args.quality,
                     subsampling=SUBSAMPLING[args.subsampling])
    print(f'{len(files)} JPEGs (quality {args.quality}, {args.subsampling}) in {args.dst}')


if __name__ == '__main__':
    main()
