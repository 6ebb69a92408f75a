"""Output serializers build their fields once per class (core.serializers.FieldsOnceMixin)."""

from rest_framework import serializers

from conversations.models import Citation
from conversations.serializers import MessageSerializer
from core.serializers import FieldsOnceMixin


class NoteSerializer(FieldsOnceMixin, serializers.Serializer):
    text = serializers.CharField()
    reader = serializers.SerializerMethodField()

    def get_reader(self, note) -> str:
        return self.context["reader"]


class CitationWithNotesSerializer(FieldsOnceMixin, serializers.ModelSerializer):
    label = serializers.CharField(source="source_name")
    notes = NoteSerializer(many=True, source="note_list")
    note_lists = serializers.ListField(child=NoteSerializer(), source="note_list")
    reader = serializers.SerializerMethodField()

    class Meta:
        model = Citation
        fields = ["number", "label", "notes", "note_lists", "reader"]

    def get_reader(self, citation) -> str:
        return self.context["reader"]


def citation(number: int, name: str) -> Citation:
    row = Citation(number=number, source_name=name, source_id="file_1")
    row.note_list = [{"text": f"note of {name}"}]
    return row


def test_each_instance_binds_its_own_fields():
    first, second = MessageSerializer(), MessageSerializer()
    assert first.fields["content"] is not second.fields["content"]
    assert first.fields["content"].parent is first
    assert second.fields["content"].parent is second
    assert list(first.fields) == list(second.fields) == MessageSerializer.Meta.fields


def test_it_represents_each_instance_with_its_own_context_and_nested_context():
    for reader in ("ann", "bob", "cy"):  # the first builds the prototype, the others copy it
        data = CitationWithNotesSerializer(citation(2, reader), context={"reader": reader}).data
        assert data == {
            "number": 2,
            "label": reader,
            "notes": [{"text": f"note of {reader}", "reader": reader}],
            "note_lists": [{"text": f"note of {reader}", "reader": reader}],  # a child field gets the context too
            "reader": reader,
        }
    prototype = CitationWithNotesSerializer.__dict__["_fields_prototype"]
    assert all(field.parent is None for field in prototype.values())  # copies were bound, never the prototype


def test_many_and_single_instances_agree():
    rows = [citation(1, "a"), citation(2, "b")]
    many = CitationWithNotesSerializer(rows, many=True, context={"reader": "r"}).data
    assert many == [CitationWithNotesSerializer(row, context={"reader": "r"}).data for row in rows]


def test_a_subclass_builds_its_own_fields():
    class WithoutNotes(CitationWithNotesSerializer):
        class Meta(CitationWithNotesSerializer.Meta):
            fields = ["number", "reader"]

    assert CitationWithNotesSerializer().fields  # the parent class builds its prototype first
    assert WithoutNotes(citation(1, "a"), context={"reader": "r"}).data == {"number": 1, "reader": "r"}
    assert list(CitationWithNotesSerializer().fields) == ["number", "label", "notes", "note_lists", "reader"]
