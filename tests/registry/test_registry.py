from __future__ import annotations

import pandas as pd
import pytest

import modelpack
from modelpack import registry
from modelpack.errors import InvalidInputError, ModelNotFoundError, RegistryConflictError

WEIRD = [
    'it\'s "quoted"',
    "modèle-ünïcødé-模型",
    "x'; DROP TABLE model_versions; --",
    "100% _under_ \\back",
]


def test_register_get_and_load_by_alias(store_uri, small_model):
    v1 = registry.register("iris", small_model, tags={"team": "a"}, description="first")
    assert (v1.name, v1.version, v1.tags, v1.stage, v1.aliases) == (
        "iris",
        1,
        {"team": "a"},
        None,
        [],
    )
    assert v1.source == str(small_model) and v1.flavors == ["python"] and v1.status == "READY"
    v2 = registry.register("iris", small_model, run_id="abc", parent="iris/1")
    assert v2.version == 2 and v2.run_id == "abc" and v2.parent == "iris/1"
    assert registry.get_version("iris", 1) == v1
    assert registry.latest_version("iris").version == 2

    registry.set_alias("iris", "champion", 1)
    assert registry.get_by_alias("iris", "champion").version == 1
    assert registry.get_version("iris", 1).aliases == ["champion"]
    model = modelpack.load("models:/iris@champion")
    assert model.predict(pd.DataFrame({"x": [2.0]})).tolist() == [4.0]
    assert modelpack.load("models:/iris/latest").path == modelpack.load("models:/iris/2").path

    registry.set_alias("iris", "champion", 2)  # moves, one version per alias
    assert registry.get_version("iris", 1).aliases == []
    registry.delete_alias("iris", "champion")
    with pytest.raises(ModelNotFoundError, match="champion"):
        modelpack.load("models:/iris@champion")


def test_missing_things_are_named(store_uri, small_model):
    with pytest.raises(ModelNotFoundError, match="'nope'"):
        registry.get_version("nope", 1)
    registry.register("m", small_model)
    with pytest.raises(ModelNotFoundError, match="no version 7"):
        modelpack.load("models:/m/7")
    with pytest.raises(ModelNotFoundError, match="stage 'Production'"):
        modelpack.load("models:/m/stage/Production")
    with pytest.raises(ModelNotFoundError, match="models:/NAME/VERSION"):
        modelpack.load("models:/m/x/y/z")


def test_transitions_are_audited(store_uri, small_model):
    registry.register("m", small_model)
    registry.register("m", small_model)
    registry.transition("m", 1, "staging", "tests pass", user="ana")
    registry.transition("m", 1, "Production", user="bob")
    registry.transition("m", 2, "Shadow", "custom stage")
    registry.transition("m", 1, "Archived")
    assert registry.get_version("m", 1).stage == "Archived"
    events = registry.history("m", 1)
    assert [(e.from_stage, e.to_stage, e.user) for e in events][:2] == [
        (None, "Staging", "ana"),
        ("Staging", "Production", "bob"),
    ]
    assert events[0].comment == "tests pass" and events[0].timestamp > 0
    assert len(registry.history("m")) == 4
    assert modelpack.load("models:/m/stage/Shadow").path.is_dir()
    with pytest.raises(InvalidInputError):
        registry.transition("m", 1, "")


def test_tags_descriptions_and_deletes(store_uri, small_model):
    for _ in range(3):
        registry.register("m", small_model)
    registry.set_tag("m", 2, "k", "v1")
    registry.set_tag("m", 2, "k", "v2")
    assert registry.get_version("m", 2).tags == {"k": "v2"}
    registry.delete_tag("m", 2, "k")
    assert registry.get_version("m", 2).tags == {}
    assert registry.update_version("m", 2, description="d").description == "d"
    registry.set_alias("m", "a", 3)
    registry.delete_version("m", 3)
    with pytest.raises(ModelNotFoundError):
        registry.get_by_alias("m", "a")
    assert registry.register("m", small_model).version == 4  # never reused
    assert [v.version for v in registry.search_versions("name = 'm'")] == [4, 2, 1]


def test_registered_models(store_uri, small_model):
    created = registry.create_model("m", description="about", tags={"owner": "ana"})
    assert (created.description, created.tags, created.latest_version) == (
        "about",
        {"owner": "ana"},
        None,
    )
    with pytest.raises(RegistryConflictError):
        registry.create_model("m")
    registry.register("m", small_model)
    registry.set_alias("m", "prod", 1)
    registry.set_model_tag("m", "tier", "gold")
    registry.delete_model_tag("m", "owner")
    got = registry.update_model("m", description="new")
    assert (got.description, got.tags, got.aliases, got.latest_version) == (
        "new",
        {"tier": "gold"},
        {"prod": 1},
        1,
    )
    registry.create_model("other")
    assert [m.name for m in registry.search_models("tags.tier = 'gold'")] == ["m"]
    assert [m.name for m in registry.search_models("name LIKE 'o%'")] == ["other"]
    registry.delete_model("m")
    with pytest.raises(ModelNotFoundError):
        registry.get_model("m")
    assert registry.register("m", small_model).version == 1


def test_search_filters_ordering_and_paging(store_uri, small_model):
    for i in range(12):
        registry.register(
            "a" if i % 2 else "b",
            small_model,
            tags={"i": str(i), "team": "t" + str(i % 3)},
            run_id=f"r{i}",
        )
    registry.set_alias("a", "champion", 3)
    registry.transition("b", 2, "Production")
    assert [v.version for v in registry.search_versions("alias = 'champion'")] == [3]
    assert [(v.name, v.version) for v in registry.search_versions("stage = 'Production'")] == [
        ("b", 2)
    ]
    assert len(registry.search_versions("stage = 'None'")) == 11
    assert len(registry.search_versions("tags.team = 't0' AND name = 'a'")) == 2
    assert len(registry.search_versions("tags.team IN ('t0', 't1')")) == 8
    assert len(registry.search_versions("tags.team != 't0'")) == 8
    assert len(registry.search_versions("run_id = 'r5'")) == 1
    assert len(registry.search_versions("name = 'a' AND alias != 'champion'")) == 5
    assert len(registry.search_versions("version >= 5 AND name NOT IN ('b')")) == 2
    assert len(registry.search_versions("name LIKE 'a%' AND tags.i LIKE '1%'")) == 2
    seen, token = [], None
    while True:
        page = registry.search_versions(
            None, order_by=["version ASC", "name DESC"], max_results=5, page_token=token
        )
        seen += [(v.version, v.name) for v in page]
        token = page.next_page_token
        if token is None:
            break
    assert seen == sorted(seen, key=lambda p: (p[0], [-ord(c) for c in p[1]])) and len(seen) == 12


@pytest.mark.parametrize(
    ("text", "pos"),
    [
        ("name = 'x", 7),
        ("nam = 'x'", 0),
        ("name == 'x'", 6),
        ("name = 'x' OR 1", 11),
        ("tags.k IN 'x'", 10),
    ],
)
def test_bad_filters_name_the_position(store_uri, text, pos):
    with pytest.raises(InvalidInputError, match=f"position {pos}"):
        registry.search_versions(text)


def test_bad_order_by_and_names(store_uri, small_model):
    with pytest.raises(InvalidInputError, match="order_by"):
        registry.search_versions(order_by="evil; DROP TABLE x")
    for bad in ("", "a/b", "a@b"):
        with pytest.raises(InvalidInputError):
            registry.register(bad, small_model)


@pytest.mark.parametrize("name", WEIRD)
def test_odd_names_and_tags_round_trip(store_uri, small_model, name):
    v = registry.register(name, small_model, tags={name: name}, description=name)
    registry.set_alias(name, "a" + name.replace("@", ""), 1)
    got = registry.get_version(name, 1)
    assert (got.name, got.tags, got.description) == (name, {name: name}, name)
    quoted = name.replace("'", "''")
    assert registry.search_versions(f"name = '{quoted}' AND tags.`{name}` = '{quoted}'").items == [
        registry.get_version(name, 1)
    ]
    assert v.version == 1 and modelpack.load(f"models:/{name}/1").path.is_dir()
    assert registry.search_versions(f"name = '{quoted}x'").items == []


def test_ten_thousand_versions_search_by_tag(store_uri, small_model, tmp_path):
    import json

    from sqlalchemy import insert

    from modelpack.store.db import get_engine, write
    from modelpack.store.schema import model_versions, version_tags

    base = registry.register("big", small_model)
    rows = [
        {
            "model_id": 1,
            "version": i,
            "source": "s",
            "status": "READY",
            "descriptor_sha256": base.descriptor_sha256,
            "flavors": json.dumps(["python"]),
            "created_at": i,
            "updated_at": i,
        }
        for i in range(2, 10_001)
    ]
    # Rows straight into the SQL store behind the API (the server's, with a team server).
    behind = store_uri
    if store_uri.startswith("http"):
        behind = f"sqlite:///{tmp_path / 'home' / 'modelpack.db'}"
    with write(get_engine(behind)) as conn:
        conn.execute(insert(model_versions), rows)
        conn.execute(
            insert(version_tags),
            [{"version_id": i, "key": "bucket", "value": str(i % 100)} for i in range(1, 10_001)],
        )
    page = registry.search_versions("name = 'big' AND tags.bucket = '7'", max_results=1000)
    assert len(page) == 100 and page.next_page_token is None
    assert registry.latest_version("big").version == 10_000
