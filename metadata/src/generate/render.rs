//! The renderer: turns category entries and update plans into update XML documents.
//!
//! The output follows the real Microsoft update XML format of the fixtures in
//! `metadata/tests/fixtures/`: their namespaces, element order and attribute order, one line,
//! no trailing newline. Details that are not in the plan but must be the same in every
//! revision (payload files and their digests, applicability rules, the install command) are
//! drawn from a random source seeded by the plan's `content_seed`, so rendering the same plan
//! twice gives the same bytes. A revision adds only its number, its publication state and its
//! creation date.

use std::borrow::Cow;
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::model::{CategoryType, MsrcSeverity, PublicationState, RevisionId, UpdateType};

use super::GeneratedDocument;
use super::plan::{PlanKind, UpdatePlan};
use super::rng::SplitMix64;
use super::taxonomy::Flavor::*;
use super::taxonomy::{
    CategoryDoc, Class, DEFINITION_DESCRIPTION, DRIVERS, EN, LANGUAGES,
    MICROSOFT_CATEGORY_PUBLISHER, PRODUCTS, ProductDef, SECURITY_DESCRIPTION, SYSTEM_FILES,
    Taxonomy, UPDATE_DESCRIPTION,
};
use super::timeline::{DAY_MS, TIMELINE_START, iso8601};

/// The namespaces of update documents, as the fixtures declare them (the custom-update
/// writer uses them too).
pub(crate) const NS_UPD: &str = "http://schemas.microsoft.com/msus/2002/12/Update";
const NS_PUB: &str = "http://schemas.microsoft.com/msus/2002/12/Publishing";
pub(crate) const NS_LAR: &str =
    "http://schemas.microsoft.com/msus/2002/12/LogicalApplicabilityRules";
const NS_BAR: &str = "http://schemas.microsoft.com/msus/2002/12/BaseApplicabilityRules";
pub(crate) const NS_CAT: &str = "http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/Category";
pub(crate) const NS_CMD: &str =
    "http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/CommandLineInstallation";
const NS_DRV: &str = "http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/WindowsDriver";
pub(crate) const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Appends formatted text to a `String` (which cannot fail).
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}

fn esc(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The document of one category of the taxonomy.
pub(super) fn render_category(category: &CategoryDoc) -> GeneratedDocument {
    let mut out = String::with_capacity(5 * 1024);
    // The namespace declarations and attribute order of the category fixtures.
    put!(
        out,
        r#"<upd:Update xmlns:pub="{NS_PUB}" xmlns:lar="{NS_LAR}" xmlns:cat="{NS_CAT}" xmlns:upd="{NS_UPD}"><upd:UpdateIdentity UpdateID="{}" RevisionNumber="{}" /><upd:Properties DefaultPropertiesLanguage="en" IsPublic="true" UpdateType="Category" Handler="{NS_CAT}" PublicationState="Published" CreationDate="{}" PublisherID="{MICROSOFT_CATEGORY_PUBLISHER}"></upd:Properties><upd:LocalizedPropertiesCollection>"#,
        category.id.to_string().to_uppercase(),
        category.revision,
        category.created,
    );
    let name = esc(category.name);
    for lang in &LANGUAGES {
        put!(
            out,
            "<upd:LocalizedProperties><upd:Language>{}</upd:Language><upd:Title>{name}</upd:Title><upd:Description>{name}</upd:Description></upd:LocalizedProperties>",
            lang.tag
        );
    }
    out.push_str("</upd:LocalizedPropertiesCollection>");
    if let Some(parent) = category.parent {
        put!(
            out,
            r#"<upd:Relationships><upd:Prerequisites><upd:AtLeastOne IsCategory="true"><upd:UpdateIdentity UpdateID="{parent}" /></upd:AtLeastOne></upd:Prerequisites></upd:Relationships>"#
        );
    }
    let (type_name, prohibits_subcategories, prohibits_updates) = match category.category_type {
        CategoryType::Company => ("Company", false, true),
        CategoryType::ProductFamily => ("ProductFamily", false, true),
        CategoryType::Product => ("Product", true, false),
        CategoryType::UpdateClassification => ("UpdateClassification", true, false),
    };
    put!(
        out,
        r#"<upd:ApplicabilityRules><upd:IsInstalled><lar:True /></upd:IsInstalled></upd:ApplicabilityRules><upd:HandlerSpecificData xsi:type="cat:Category" xmlns:xsi="{NS_XSI}"><cat:CategoryInformation CategoryType="{type_name}" ProhibitsSubcategories="{prohibits_subcategories}" ProhibitsUpdates="{prohibits_updates}" DisplayOrder="{}" /></upd:HandlerSpecificData></upd:Update>"#,
        category.display_order
    );
    let id = RevisionId {
        update_id: category.id,
        revision: category.revision,
    };
    GeneratedDocument {
        file_name: GeneratedDocument::file_name_for(id),
        id,
        update_type: UpdateType::Category,
        publication_state: PublicationState::Published,
        xml: out.into_bytes(),
    }
}

/// One generated payload file.
struct FileSpec {
    name: String,
    size: u64,
    modified: i64,
    sha1: [u8; 20],
    sha256: [u8; 32],
}

fn files_of(plan: &UpdatePlan) -> Vec<FileSpec> {
    let def = &PRODUCTS[plan.product];
    let mut rng = SplitMix64::new(plan.content_seed ^ 0x0F11_E500);
    let kb = plan.kb.unwrap_or(0);
    let names: Vec<String> = match (plan.kind, def.flavor) {
        (PlanKind::Detectoid, _) => return Vec::new(),
        // A bundle carries no payload of its own, like the real ones.
        (PlanKind::Software, _) if !plan.bundled.is_empty() => return Vec::new(),
        (PlanKind::Driver, _) => vec![format!("{:016x}.cab", rng.next_u64())],
        (_, WindowsClassic) => {
            let count = rng.range(1, 3);
            (0..count)
                .map(|i| {
                    format!(
                        "{}-KB{kb}-{}-ENU.exe",
                        def.stem,
                        ["x86", "x64", "ia64"][i as usize]
                    )
                })
                .collect()
        }
        (_, WindowsModern) => {
            let count = rng.range(1, 2);
            (0..count)
                .map(|i| format!("{}-KB{kb}-{}.msu", def.stem, ["x86", "x64"][i as usize]))
                .collect()
        }
        (_, Office) => vec![format!("{}-kb{kb}-fullfile-x86-glb.exe", def.stem)],
        (_, ServerApp) => vec![format!("{}-KB{kb}-x86-ENU.exe", def.stem)],
        (_, Definitions) => {
            if rng.chance(1, 2) {
                vec!["mpas-fe.exe".to_owned()]
            } else {
                vec!["mpas-fe.exe".to_owned(), "AM_Delta.exe".to_owned()]
            }
        }
        (_, LineOfBusiness) => vec![format!("{}.msi", plan.title.replace(' ', ""))],
        (_, ThirdParty) => vec![format!("{}-{:08x}.exe", def.stem, rng.next_u64() as u32)],
    };
    names
        .into_iter()
        .map(|name| {
            let bits = rng.range(15, 27);
            FileSpec {
                name,
                size: rng.range(1 << bits, (1 << (bits + 1)) - 1),
                modified: plan.created - rng.range(DAY_MS as u64, 20 * DAY_MS as u64) as i64,
                sha1: rng.bytes(),
                sha256: rng.bytes(),
            }
        })
        .collect()
}

/// Revision `revision` of the planned update, in publication state `state`.
pub(super) fn document_for(
    tax: &Taxonomy,
    plan: &UpdatePlan,
    revision: u32,
    state: PublicationState,
    created: i64,
) -> GeneratedDocument {
    let id = RevisionId {
        update_id: plan.id,
        revision,
    };
    let update_type = match plan.kind {
        PlanKind::Software | PlanKind::BundleChild => UpdateType::Software,
        PlanKind::Driver => UpdateType::Driver,
        PlanKind::Detectoid => UpdateType::Detectoid,
    };
    GeneratedDocument {
        file_name: GeneratedDocument::file_name_for(id),
        id,
        update_type,
        publication_state: state,
        xml: render_update(tax, plan, revision, state, created).into_bytes(),
    }
}

fn render_update(
    tax: &Taxonomy,
    plan: &UpdatePlan,
    revision: u32,
    state: PublicationState,
    created: i64,
) -> String {
    let def = &PRODUCTS[plan.product];
    let files = files_of(plan);
    let mut out = String::with_capacity(4 * 1024);

    put!(
        out,
        r#"<upd:Update xmlns:pub="{NS_PUB}" xmlns:bar="{NS_BAR}" xmlns:lar="{NS_LAR}" "#
    );
    match plan.kind {
        PlanKind::Driver => put!(out, r#"xmlns:drv="{NS_DRV}" "#),
        PlanKind::Software | PlanKind::BundleChild if !files.is_empty() => {
            put!(out, r#"xmlns:cmd="{NS_CMD}" "#)
        }
        _ => {}
    }
    put!(
        out,
        r#"xmlns:upd="{NS_UPD}"><upd:UpdateIdentity UpdateID="{}" RevisionNumber="{revision}" />"#,
        plan.id
    );

    // Properties.
    let state_text = match state {
        PublicationState::Published => "Published",
        PublicationState::Expired => "Expired",
    };
    let type_text = match plan.kind {
        PlanKind::Software | PlanKind::BundleChild => "Software",
        PlanKind::Driver => "Driver",
        PlanKind::Detectoid => "Detectoid",
    };
    put!(
        out,
        r#"<upd:Properties UpdateType="{type_text}" DefaultPropertiesLanguage="en""#
    );
    if !files.is_empty() {
        let handler = if plan.kind == PlanKind::Driver {
            NS_DRV
        } else {
            NS_CMD
        };
        let total: u64 = files.iter().map(|f| f.size).sum();
        put!(
            out,
            r#" Handler="{handler}" MaxDownloadSize="{total}" MinDownloadSize="0""#
        );
    }
    if !plan.bundled.is_empty() {
        out.push_str(r#" AutoSelectOnWebSites="true" ExplicitlyDeployable="true""#);
    }
    if plan.kind == PlanKind::BundleChild {
        out.push_str(r#" ExplicitlyDeployable="false""#);
    }
    if let Some(severity) = plan.severity {
        put!(out, r#" MsrcSeverity="{}""#, severity_text(severity));
    }
    put!(
        out,
        r#" PublicationState="{state_text}" CreationDate="{}" PublisherID="{}">"#,
        iso8601(created),
        plan.publisher
    );
    if !files.is_empty() {
        let behavior = match (plan.kind, def.flavor) {
            (PlanKind::Driver, _) => {
                r#"<upd:InstallationBehavior RebootBehavior="CanRequestReboot" />"#
            }
            (_, Definitions) => r#"<upd:InstallationBehavior Impact="Minor" />"#,
            _ => {
                r#"<upd:InstallationBehavior Impact="Normal" RebootBehavior="CanRequestReboot" />"#
            }
        };
        out.push_str(behavior);
    }
    if plan.kb.is_some() {
        out.push_str("<upd:SupportUrl>http://support.microsoft.com</upd:SupportUrl>");
    }
    if let Some(bulletin) = &plan.bulletin {
        put!(
            out,
            "<upd:SecurityBulletinID>{bulletin}</upd:SecurityBulletinID>"
        );
    }
    if let Some(kb) = plan.kb {
        put!(out, "<upd:KBArticleID>{kb}</upd:KBArticleID>");
    }
    out.push_str("</upd:Properties>");

    render_localized(&mut out, plan, def);
    render_relationships(&mut out, tax, plan);

    // What follows the rules is rendered first, so the rules can grow to the target size.
    let mut tail = String::new();
    render_files(&mut tail, &files);
    render_handler(&mut tail, plan, &files);
    tail.push_str("</upd:Update>");
    let rules_target = plan.min_bytes.saturating_sub(out.len() + tail.len());
    render_rules(&mut out, plan, def, rules_target);
    out.push_str(&tail);
    out
}

fn severity_text(severity: MsrcSeverity) -> &'static str {
    match severity {
        MsrcSeverity::Low => "Low",
        MsrcSeverity::Moderate => "Moderate",
        MsrcSeverity::Important => "Important",
        MsrcSeverity::Critical => "Critical",
    }
}

fn render_localized(out: &mut String, plan: &UpdatePlan, def: &ProductDef) {
    out.push_str("<upd:LocalizedPropertiesCollection>");
    let english_description = match (plan.kind, plan.class) {
        (PlanKind::Detectoid, _) => None,
        (PlanKind::Driver, _) => Some(format!("{} driver update", plan.title)),
        (_, Class::Security) => Some(SECURITY_DESCRIPTION.to_owned()),
        (_, Class::Definition) => Some(DEFINITION_DESCRIPTION.to_owned()),
        _ => Some(UPDATE_DESCRIPTION.replace("{p}", def.name)),
    };
    // English first, then the others in catalog order, like the real documents.
    let order = std::iter::once(EN).chain((0..LANGUAGES.len()).filter(|&i| i != EN));
    for index in order.filter(|i| plan.languages & (1 << i) != 0) {
        let lang = &LANGUAGES[index];
        let (title, description) = if index == EN {
            (plan.title.clone(), english_description.clone())
        } else {
            let template = if plan.class == Class::Security {
                lang.security
            } else {
                lang.update
            };
            let kb = plan.kb.map(|kb| format!(" (KB{kb})")).unwrap_or_default();
            (
                format!("{}{kb}", template.replace("{p}", def.name)),
                Some(lang.description.to_owned()),
            )
        };
        put!(
            out,
            "<upd:LocalizedProperties><upd:Language>{}</upd:Language><upd:Title>{}</upd:Title>",
            lang.tag,
            esc(&title)
        );
        if let Some(description) = description {
            put!(
                out,
                "<upd:Description>{}</upd:Description>",
                esc(&description)
            );
        }
        if let Some(kb) = plan.kb {
            put!(
                out,
                "<upd:MoreInfoUrl>http://support.microsoft.com/kb/{kb}</upd:MoreInfoUrl>"
            );
        }
        out.push_str("</upd:LocalizedProperties>");
    }
    out.push_str("</upd:LocalizedPropertiesCollection>");
}

fn render_relationships(out: &mut String, tax: &Taxonomy, plan: &UpdatePlan) {
    out.push_str("<upd:Relationships>");
    if !plan.superseded.is_empty() {
        out.push_str("<upd:SupersededUpdates>");
        for id in &plan.superseded {
            put!(out, r#"<upd:UpdateIdentity UpdateID="{id}" />"#);
        }
        out.push_str("</upd:SupersededUpdates>");
    }
    out.push_str("<upd:Prerequisites>");
    for id in &plan.prerequisites {
        put!(out, r#"<upd:UpdateIdentity UpdateID="{id}" />"#);
    }
    // Children name their categories in plain groups, as the real ones do.
    let group = if plan.kind == PlanKind::BundleChild {
        "<upd:AtLeastOne>"
    } else {
        r#"<upd:AtLeastOne IsCategory="true">"#
    };
    put!(
        out,
        r#"{group}<upd:UpdateIdentity UpdateID="{}" /></upd:AtLeastOne>"#,
        tax.products[plan.product]
    );
    if plan.kind != PlanKind::Detectoid {
        put!(
            out,
            r#"{group}<upd:UpdateIdentity UpdateID="{}" /></upd:AtLeastOne>"#,
            tax.classification(plan.class)
        );
    }
    out.push_str("</upd:Prerequisites>");
    if !plan.bundled.is_empty() {
        out.push_str("<upd:BundledUpdates>");
        // Alternatives (one per architecture) form a group; a single child stands alone.
        let grouped = plan.bundled.len() > 1;
        if grouped {
            out.push_str("<upd:AtLeastOne>");
        }
        for child in &plan.bundled {
            put!(
                out,
                r#"<upd:UpdateIdentity UpdateID="{}" RevisionNumber="{}" />"#,
                child.update_id,
                child.revision
            );
        }
        if grouped {
            out.push_str("</upd:AtLeastOne>");
        }
        out.push_str("</upd:BundledUpdates>");
    }
    out.push_str("</upd:Relationships>");
}

/// Windows versions `(major, minor)` per product stem, for rules.
fn windows_version(stem: &str) -> (u32, u32) {
    match stem {
        "Windows2000" => (5, 0),
        "WindowsXP" => (5, 1),
        "Windows6.0" => (6, 0),
        "Windows6.1" => (6, 1),
        "Windows8.1" => (6, 3),
        _ => (5, 2),
    }
}

fn render_rules(out: &mut String, plan: &UpdatePlan, def: &ProductDef, target: usize) {
    let mut rng = SplitMix64::new(plan.content_seed ^ 0x000A_11E5);
    let start = out.len();
    let (major, minor) = windows_version(def.stem);
    out.push_str("<upd:ApplicabilityRules>");
    match plan.kind {
        PlanKind::Driver => {
            let (manufacturer, class, _, hardware) = DRIVERS
                .iter()
                .find(|d| plan.title.starts_with(d.0))
                .copied()
                .unwrap_or(DRIVERS[0]);
            let hardware_id = hardware.replace("{}", &format!("{:04X}", rng.below(0x10000)));
            let date = iso8601(TIMELINE_START + rng.below(20 * 365) as i64 * DAY_MS);
            put!(
                out,
                r#"<upd:Metadata><drv:WindowsDriverMetaData HardwareID="{}" WhqlDriverID="{}" Manufacturer="{manufacturer}" Company="{manufacturer}" Provider="{manufacturer}" DriverVerDate="{}" DriverVerVersion="{}.{}.{}.{}" Class="{class}" /></upd:Metadata>"#,
                esc(&hardware_id),
                rng.range(100_000, 9_999_999),
                &date[..10],
                rng.range(1, 30),
                rng.range(0, 99),
                rng.range(0, 999),
                rng.range(0, 9_999),
            );
        }
        PlanKind::Detectoid => {
            put!(
                out,
                r#"<upd:IsInstalled><lar:And><bar:WindowsVersion Comparison="EqualTo" MajorVersion="{major}" MinorVersion="{minor}" /><bar:Processor Architecture="{}" /></lar:And></upd:IsInstalled>"#,
                rng.below(3) * 3
            );
        }
        PlanKind::Software | PlanKind::BundleChild if !plan.bundled.is_empty() => {
            // A bundle is installed when its children are; it has no rules of its own.
            out.push_str("<upd:IsInstalled><lar:False /></upd:IsInstalled>");
        }
        PlanKind::Software | PlanKind::BundleChild => {
            let file = *rng.pick(&SYSTEM_FILES);
            let build = rng.range(1_000, 24_000);
            let fix = rng.range(16_000, 23_000);
            put!(
                out,
                r#"<upd:IsInstalled><bar:FileVersion Path="{file}" Comparison="GreaterThanOrEqualTo" Version="{major}.{minor}.{build}.{fix}" Csidl="37" /></upd:IsInstalled><upd:IsInstallable><lar:And><bar:WindowsVersion Comparison="GreaterThanOrEqualTo" MajorVersion="{major}" MinorVersion="{minor}" /><bar:FileExists Path="{file}" Csidl="37" />"#
            );
            if def.flavor == Office || def.flavor == ServerApp {
                put!(
                    out,
                    r#"<bar:RegKeyExists Key="HKEY_LOCAL_MACHINE" Subkey="SOFTWARE\Microsoft\{}" />"#,
                    esc(def.name)
                );
            }
            // The large tail: long lists of versions this update replaces, like the
            // Defender delta fixture's.
            if out.len() - start < target {
                out.push_str("<lar:Not><lar:Or>");
                let mut version = rng.range(100, 900);
                while out.len() - start + 40 < target {
                    version += rng.range(1, 3);
                    put!(
                        out,
                        r#"<lar:And><bar:FileVersionPrependRegSz Path="{file}" Comparison="EqualTo" Version="{major}.{minor}.{build}.{version}" Key="HKEY_LOCAL_MACHINE" Subkey="SOFTWARE\Microsoft\Windows\CurrentVersion" Value="ProgramFilesDir" /><bar:RegDword Key="HKEY_LOCAL_MACHINE" Subkey="SOFTWARE\Microsoft\Updates\KB{}" Value="Installed" Comparison="EqualTo" Data="1" /></lar:And>"#,
                        plan.kb.unwrap_or(0)
                    );
                }
                out.push_str("</lar:Or></lar:Not>");
            }
            out.push_str("</lar:And></upd:IsInstallable>");
        }
    }
    out.push_str("</upd:ApplicabilityRules>");
}

fn render_files(out: &mut String, files: &[FileSpec]) {
    if files.is_empty() {
        return;
    }
    out.push_str("<upd:Files>");
    for file in files {
        put!(
            out,
            r#"<upd:File Digest="{}" DigestAlgorithm="SHA1" FileName="{}" Size="{}" Modified="{}Z"><upd:AdditionalDigest Algorithm="SHA256">{}</upd:AdditionalDigest></upd:File>"#,
            BASE64.encode(file.sha1),
            esc(&file.name),
            file.size,
            &iso8601(file.modified)[..19],
            BASE64.encode(file.sha256),
        );
    }
    out.push_str("</upd:Files>");
}

fn render_handler(out: &mut String, plan: &UpdatePlan, files: &[FileSpec]) {
    let (PlanKind::Software | PlanKind::BundleChild, Some(first)) = (plan.kind, files.first())
    else {
        return;
    };
    let arguments = match PRODUCTS[plan.product].flavor {
        Definitions => "-q",
        LineOfBusiness => "/qn /norestart",
        _ => "/quiet /norestart",
    };
    put!(
        out,
        r#"<upd:HandlerSpecificData xsi:type="cmd:CommandLineInstallation" xmlns:xsi="{NS_XSI}"><cmd:InstallCommand Program="{}" Arguments="{arguments}" RebootByDefault="false" DefaultResult="Failed"><cmd:ReturnCode Code="0" Result="Succeeded" Reboot="false" /><cmd:ReturnCode Code="3010" Result="Succeeded" Reboot="true" /></cmd:InstallCommand></upd:HandlerSpecificData>"#,
        esc(&first.name)
    );
}
