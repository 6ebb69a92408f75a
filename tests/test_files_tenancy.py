"""Every files route, called across tenants, answers 404 in the error shape and changes nothing."""

import pytest

from conversations.models import Citation, Message
from files.models import File
from tests.file_factories import multipart, stored_files, upload

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def _cited_file(ctx):
    conversation = ctx.conversation()
    file_ref = upload(ctx, conversation, [("secret.txt", b"Quarterly secret numbers.")]).json()["items"][0]["file_ref"]
    message = Message.objects.create(tenant=ctx.tenant, conversation=conversation, role="assistant", content="x")
    Citation.objects.create(tenant=ctx.tenant, message=message, number=1, source_id=file_ref, snippet="s")
    return conversation, file_ref


def _routes(conv_url: str, file_ref: str):
    body, content_type = multipart([("x.txt", b"intruder")])
    return [
        ("get", f"{conv_url}/files", {}),
        ("post", f"{conv_url}/files", {"data": body, "content_type": content_type}),
        ("get", f"{conv_url}/files/download/?file_ref={file_ref}", {}),
        ("delete", f"{conv_url}/files/{file_ref}", {}),
        ("get", f"{conv_url}/related-documents", {}),
        ("get", f"{conv_url}/related-documents/{file_ref}", {}),
        ("get", f"{conv_url}/related-documents/{file_ref}/preview", {}),
    ]


def _assert_untouched(ctx, file_ref, media):
    assert File.objects.filter(tenant=ctx.tenant).count() == 1
    assert File.objects.filter(id=file_ref).exists()
    assert len(stored_files(media)) == 1


def test_another_tenants_file_urls_are_404_with_my_key(owner, outsider, media):
    conversation, file_ref = _cited_file(outsider)
    for method, url, kwargs in _routes(outsider.conversation_url(conversation), file_ref):
        response = getattr(owner.client, method)(url, **kwargs)
        assert response.status_code == 404, (method, url)
        assert response.json()["error"]["code"] == "not_found"
    _assert_untouched(outsider, file_ref, media)


def test_another_tenants_conversation_under_my_url_is_404(owner, outsider, media):
    conversation, file_ref = _cited_file(outsider)
    conv_url = f"{owner.agent_url}/conversations/{conversation.id}"
    for method, url, kwargs in _routes(conv_url, file_ref):
        response = getattr(owner.client, method)(url, **kwargs)
        assert response.status_code == 404, (method, url)
    _assert_untouched(outsider, file_ref, media)


def test_another_tenants_file_ref_in_my_conversation_is_404(owner, outsider, media):
    _, file_ref = _cited_file(outsider)
    mine = owner.conversation()
    # even cited in my conversation, a foreign file cannot be previewed, listed with a link, or fetched
    message = Message.objects.create(tenant=owner.tenant, conversation=mine, role="assistant", content="x")
    Citation.objects.create(tenant=owner.tenant, message=message, number=1, source_id=file_ref, snippet="s")
    conv_url = owner.conversation_url(mine)
    for method, url, _ in _routes(conv_url, file_ref)[2:]:
        if url.endswith("/related-documents"):
            continue
        response = getattr(owner.client, method)(url)
        if url.endswith(f"/related-documents/{file_ref}"):
            # the citation is the owner's own row; the foreign file's name or bytes never show
            assert response.status_code == 200
            assert response.json()["name"] == "" and response.json()["passages"] == []
            assert response.json()["link"] == ""
            continue
        assert response.status_code == 404, (method, url)
    listing = owner.client.get(f"{conv_url}/related-documents").json()["items"]
    assert listing[0]["name"] == "" and listing[0]["link"] == "" and listing[0]["updated_date"] is None
    _assert_untouched(outsider, file_ref, media)


def test_every_files_route_without_a_key_is_401(owner, anon, media):
    conversation, file_ref = _cited_file(owner)
    for method, url, kwargs in _routes(owner.conversation_url(conversation), file_ref):
        response = getattr(anon, method)(url, **kwargs)
        assert response.status_code == 401, (method, url)
    _assert_untouched(owner, file_ref, media)
