"""Subjects, captions and base prompts."""

import pytest

from dcobench.errors import DcoError
from dcobench.suites.base import base_prompt, load_subject


@pytest.mark.parametrize("caption,expected", [
    ("a photo of sks dog", "a photo of dog"),
    ("a sks dog sitting on green grass, watercolor", "a dog sitting on green grass, watercolor"),
    ("sks wearing a hat", "dog wearing a hat"),
    ("a photo of a dog", "a photo of a dog"),
    ("a sksy dog", "a sksy dog"),  # only whole words are identifiers
])
def test_base_prompt(caption, expected):
    assert base_prompt(caption, "sks", "dog") == expected


def _subject(tmp_path, tiny_suite):
    import shutil

    folder = tmp_path / "s"
    shutil.copytree(tiny_suite.subjects[0].root, folder)
    return folder


def test_captions_from_files_and_default(tmp_path, tiny_suite):
    folder = _subject(tmp_path, tiny_suite)
    s = load_subject(folder)
    assert s.captions[0] == (folder / "00.txt").read_text().strip()
    assert s.base_captions[0] == s.captions[0].replace("sks toy", "toy")
    (folder / "00.txt").unlink()
    assert load_subject(folder).captions[0] == "a photo of sks toy"
    (folder / "01.base.txt").write_text("an explicit base caption")
    assert load_subject(folder).base_captions[1] == "an explicit base caption"


def test_caption_without_identifier_is_rejected(tmp_path, tiny_suite):
    folder = _subject(tmp_path, tiny_suite)
    (folder / "01.txt").write_text("a photo of a toy")
    with pytest.raises(DcoError, match=r"01\.txt: caption does not contain the identifier 'sks'"):
        load_subject(folder)


def test_subject_yaml_is_strict(tmp_path, tiny_suite):
    folder = _subject(tmp_path, tiny_suite)
    (folder / "subject.yaml").write_text("class_noun: toy\nidentifer: sks\n")
    with pytest.raises(DcoError, match="unknown key 'identifer'"):
        load_subject(folder)


def test_empty_folder(tmp_path):
    (tmp_path / "e").mkdir()
    with pytest.raises(DcoError, match="no reference images"):
        load_subject(tmp_path / "e", class_noun="dog")
