"""The prompt / response format (docs/algorithm.md#prompt-and-response-format)."""
import pytest

from bstar_jax.text import format as fmt


def test_prompt_format_is_the_papers():
    assert fmt.format_prompt("Q?") == "# Question\n\nQ?\n\n# Solution\n\n"
    assert fmt.format_response(["a", "b\nc"], "7") == "a\n\nb\nc\n\n# Answer\n\n7"
    assert fmt.ANSWER_MARKER == "\n\n# Answer\n\n"


def test_split_steps_inverts_format_response():
    steps = ["First <<1+2=3>>3.", "Then\nmore <<3*4=12>>12."]
    assert fmt.split_steps(fmt.format_response(steps, "12")) == (steps, "12")
    assert fmt.split_steps(fmt.format_response([], "B")) == ([], "B")
    # no marker: all steps, no answer; several markers: the last one wins
    assert fmt.split_steps("a\n\nb") == (["a", "b"], None)
    assert fmt.split_steps("a\n\n# Answer\n\n1\n\n# Answer\n\n2 ") == (["a", "# Answer", "1"], "2")
    with pytest.raises(ValueError):
        fmt.format_response(["two\n\nparagraphs"], "1")
