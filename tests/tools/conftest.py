from tiny_cls_setup import image_folder, trained_2_epochs  # noqa: F401 (fixtures)
